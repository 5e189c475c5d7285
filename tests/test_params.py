"""The parameter-record mechanism (sbnn/params.py) on a small record of every field kind."""

from __future__ import annotations

import json
import subprocess
import sys
from enum import Enum
from typing import Annotated, ClassVar

import pydantic
import pytest
from pydantic import Field, model_validator

from sbnn.params import ParamError, Record, cli_fields, file_schema, read_record_file


class Shape(str, Enum):
    """A choice field's values."""

    round = "round"
    square = "square"
    star = "star"


class RecipeError(ParamError):
    prefix = "recipe option"


class Recipe(Record):
    """A test record."""

    _record_name: ClassVar[str] = "recipe option"
    _error: ClassVar[type[ParamError]] = RecipeError
    _sibling_tables: ClassVar[tuple[str, ...]] = ("extra",)

    count: int = Field(3, description="How many.", ge=0, le=10)
    rate: float = Field(0.5, description="How fast.", gt=0, le=1)
    limit: float | None = Field(None, description="Upper limit.", ge=0, lt=2)
    shape: Shape = Field(Shape.round, description="Which shape.", strict=False)
    loud: bool = Field(False, description="Whether loud.")
    widths: tuple[Annotated[int, Field(ge=1, le=9)], ...] = Field(
        (1, 2), description="Widths.", min_length=2)

    @model_validator(mode="after")
    def _count_fits_widths(self) -> Recipe:
        if self.count > 3 * len(self.widths):
            raise RecipeError("count", f"at most {3 * len(self.widths)} for these widths")
        return self


def test_param_error_is_one_line_naming_the_field():
    err = ParamError("adc_bits", "must be an integer in 2..16, got 1", record="config")
    assert str(err) == "config field 'adc_bits': must be an integer in 2..16, got 1"
    assert err.field_name == "adc_bits" and isinstance(err, ValueError)
    assert str(RecipeError("x", "bad")) == "recipe option 'x': bad"
    assert str(ParamError("x", "bad", record="variation")) == "variation field 'x': bad"


@pytest.mark.parametrize("changes, field, message", [
    ({"count": True}, "count", "must be an integer in 0..10, got True"),
    ({"count": "3"}, "count", "must be an integer in 0..10, got '3'"),
    ({"count": 2.0}, "count", "must be an integer in 0..10, got 2.0"),
    ({"count": 11}, "count", "must be an integer in 0..10, got 11"),
    ({"rate": 0}, "rate", "must be a number in (0, 1], got 0"),
    ({"rate": float("nan")}, "rate", "must be a number in (0, 1], got nan"),
    ({"rate": "0.5"}, "rate", "must be a number in (0, 1], got '0.5'"),
    ({"limit": 2.0}, "limit", "must be a number in [0, 2) or left out, got 2.0"),
    ({"shape": "oval"}, "shape", "must be one of 'round', 'square', 'star', got 'oval'"),
    ({"loud": 1}, "loud", "must be true or false, got 1"),
    ({"widths": [1]}, "widths", "must be a list of at least 2 integers in 1..9, got (1,)"),
    ({"widths": "12"}, "widths", "must be a list of at least 2 integers in 1..9, got '12'"),
    ({"widths": [1, 10]}, "widths", "entry 1 must be an integer in 1..9, got 10"),
    ({"widths": [1, True]}, "widths", "entry 1 must be an integer in 1..9, got True"),
    ({"colour": 1}, "colour", "unknown option; allowed options are count, limit, loud, "
                              "rate, shape, widths"),
    ({"count": 7}, "count", "at most 6 for these widths"),  # the model validator's own
])
def test_invalid_values_raise_one_error_naming_the_field(changes, field, message):
    with pytest.raises(RecipeError) as err:
        Recipe(**changes)
    assert err.value.field_name == field
    assert str(err.value) == f"recipe option '{field}': {message}"


def test_first_failing_field_in_declaration_order_is_named():
    with pytest.raises(RecipeError) as err:
        Recipe(widths=[0, 0], count=-1, rate=5)
    assert err.value.field_name == "count"


def test_values_are_converted_only_where_files_need_it():
    r = Recipe(rate=1, shape="star", widths=[4, 5, 6])
    assert r.rate == 1.0 and type(r.rate) is float  # an int for a float becomes a float
    assert r.shape is Shape.star  # a choice's value string gives the member
    assert r.widths == (4, 5, 6)  # a list gives a tuple (JSON/TOML have no tuples)


def test_frozen_hashable_and_compared_by_value():
    a, b = Recipe(count=4, widths=(2, 3)), Recipe(widths=[2, 3], count=4)
    assert a == b and hash(a) == hash(b) and {a: 1}[b] == 1
    assert a != Recipe(count=5, widths=(2, 3))
    with pytest.raises(pydantic.ValidationError):
        a.count = 5


def test_snapshot_text_and_round_trip(tmp_path):
    r = Recipe(count=4, shape=Shape.square, limit=1.5)
    assert r.to_dict() == {"count": 4, "rate": 0.5, "limit": 1.5, "shape": "square",
                           "loud": False, "widths": [1, 2]}
    assert r.to_json() == ('{\n  "count": 4,\n  "limit": 1.5,\n  "loud": false,\n'
                           '  "rate": 0.5,\n  "shape": "square",\n  "widths": [\n    1,\n'
                           '    2\n  ]\n}\n')
    path = r.write_snapshot(tmp_path / "r.json")
    assert path.read_text() == r.to_json()
    assert Recipe.load_file(path, "--recipe", "recipe") == r
    assert Recipe.from_dict(json.loads(r.to_json())) == r


def test_replace_validates_again_and_keeps_other_fields():
    r = Recipe(count=4, loud=True)
    assert r.replace(rate=0.25) == Recipe(count=4, loud=True, rate=0.25)
    with pytest.raises(RecipeError, match="'rate'"):
        r.replace(rate=2)
    with pytest.raises(RecipeError, match="'count': at most 6"):  # the rule between fields
        Recipe(widths=(5, 5, 5), count=7).replace(widths=(5, 5))


@pytest.mark.parametrize("name, text, field, words", [
    ("r.toml", "[recipe]\ncount = 4\n[extra]\nx = 1\n", None, None),
    ("r.toml", "count = 4\n[extra]\nx = 1\n", None, None),
    ("r.json", '{"$schema": "./recipe.schema.json", "count": 4}', None, None),
    ("r.json", '{"count": 4, "count": 5}', "--recipe", "duplicate key 'count'"),
    ("r.toml", "count = 1\n[recipe]\nrate = 0.1\n", "count", "beside a [recipe] table"),
    ("r.toml", "[other]\n", "other", "unknown table [other]"),
    ("r.toml", "count = 'x'\n", "count", "must be an integer in 0..10, got 'x'"),
    ("r.toml", "[recipe\n", "--recipe", "cannot parse"),
])
def test_record_files_are_read_strictly(tmp_path, name, text, field, words):
    path = tmp_path / name
    path.write_text(text)
    if field is None:
        assert Recipe.load_file(path, "--recipe", "recipe") == Recipe(count=4)
        return
    with pytest.raises(RecipeError) as err:
        Recipe.load_file(path, "--recipe", "recipe")
    assert err.value.field_name == field and words in str(err.value)
    assert "\n" not in str(err.value)


def test_sibling_tables_are_returned_and_missing_files_named(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text("[recipe]\ncount = 4\n[extra]\nx = 1\n")
    assert read_record_file(path, "--recipe", "recipe", ("extra",)) == \
        ({"count": 4}, {"extra": {"x": 1}})
    with pytest.raises(RecipeError, match="'--recipe': file .* does not exist"):
        Recipe.load_file(tmp_path / "none.toml", "--recipe", "recipe")


def test_cli_fields_describe_each_field():
    fields = {f.name: f for f in cli_fields(Recipe)}
    assert list(fields) == ["count", "rate", "limit", "shape", "loud", "widths"]
    count = fields["count"]
    assert (count.option, count.type, count.default, count.nullable) == ("--count", int, 3,
                                                                         False)
    assert count.help == "How many. (an integer in 0..10)"
    shape = fields["shape"]
    assert (shape.type, shape.default, shape.choices) == (str, "round",
                                                         ("round", "square", "star"))
    assert fields["limit"].nullable and fields["limit"].type is float
    assert fields["loud"].type is bool
    assert fields["widths"].multiple and fields["widths"].type is int
    assert fields["widths"].default == (1, 2)


def test_a_strict_choice_field_is_refused_at_class_definition():
    with pytest.raises(TypeError, match="strict=False"):
        class Broken(Record):
            shape: Shape = Field(Shape.round, description="no strict=False")


def test_schemas_carry_types_ranges_choices_and_descriptions():
    schema = Recipe.json_schema()
    count = schema["properties"]["count"]
    assert (count["type"], count["minimum"], count["maximum"]) == ("integer", 0, 10)
    assert count["description"] == "How many."
    assert schema["additionalProperties"] is False
    assert schema["$defs"]["Shape"]["enum"] == ["round", "square", "star"]
    whole = file_schema(Recipe, "recipe", "Recipe file", "A recipe.",
                        {"extra": {"type": "object"}})
    assert whole["properties"]["recipe"]["$ref"] == "#/$defs/Recipe"
    assert whole["properties"]["count"] == count and whole["additionalProperties"] is False
    assert set(whole["properties"]) == {"$schema", "recipe", "extra", *Recipe.model_fields}
    assert (whole["title"], whole["description"]) == ("Recipe file", "A recipe.")


def test_params_imports_neither_torch_nor_amaranth():
    code = ("import sys, sbnn.params, sbnn.config; "
            "print(sorted(m for m in ('torch', 'amaranth') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


class Plan(Record):
    """A record holding a record."""

    name: str = Field("p", description="Name.")
    recipe: Recipe = Field(Recipe(count=4), description="The recipe.")


def test_a_record_inside_a_record_snapshots_as_an_object():
    plan = Plan(recipe=Recipe(shape="star"))
    assert plan.to_dict() == {"name": "p", "recipe": {
        "count": 3, "rate": 0.5, "limit": None, "shape": "star", "loud": False,
        "widths": [1, 2]}}
    assert json.loads(plan.to_json())["recipe"]["shape"] == "star"
    assert Plan.from_dict(json.loads(plan.to_json())) == plan
