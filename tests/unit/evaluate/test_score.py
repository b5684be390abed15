"""Exact-match scoring, BFCL's AST rules on hand-made cases, and the metrics aggregate."""

from __future__ import annotations

import pytest

from xlam_hpc.evaluate.score import aggregate, ast_match, score_calls


def call(name, **arguments):
    return {"name": name, "arguments": arguments}


def test_score_calls_exact_in_any_order():
    gold = [call("a", x=1), call("b", y="z")]
    assert score_calls(list(reversed(gold)), gold) == {"name_correct": True, "args_exact": True, "exact": True}
    assert score_calls([], []) == {"name_correct": True, "args_exact": True, "exact": True}


@pytest.mark.parametrize(
    ("pred", "expected"),
    [
        ([call("a", x=2), call("b", y="z")], (True, False)),  # wrong value
        ([call("a", x=1)], (False, False)),  # a call missing
        ([call("a", x=1), call("b", y="z"), call("b", y="z")], (False, False)),  # one too many
        ([call("a", x=1), call("c", y="z")], (False, False)),  # wrong name
        ([call("a", x=1, w=0), call("b", y="z")], (True, False)),  # extra argument
        ([call("a", x=True), call("b", y="z")], (True, False)),  # True is not 1
        ([call("a", x=1.0), call("b", y="z")], (True, True)),  # 1.0 is 1
    ],
)
def test_score_calls_mismatches(pred, expected):
    got = score_calls(pred, [call("a", x=1), call("b", y="z")])
    assert (got["name_correct"], got["args_exact"]) == expected
    assert got["exact"] == all(expected)


def test_score_calls_matches_each_gold_call_once():
    gold = [call("a", x=1), call("a", x=2)]
    assert score_calls([call("a", x=1), call("a", x=1)], gold)["args_exact"] is False
    assert score_calls([call("a", x=2), call("a", x=1)], gold)["exact"] is True


DOC = {
    "name": "geo.area",
    "description": "Area of a shape.",
    "parameters": {
        "type": "dict",
        "properties": {
            "shape": {"type": "string"},
            "size": {"type": "float"},
            "count": {"type": "integer", "default": 1},
            "tags": {"type": "array", "items": {"type": "string"}},
            "opts": {"type": "dict", "properties": {"unit": {"type": "string"}, "round": {"type": "integer"}}},
            "points": {"type": "array", "items": {"type": "dict"}},
            "exact": {"type": "boolean"},
        },
        "required": ["shape", "size"],
    },
}
OTHER = {
    "name": "geo.perimeter",
    "parameters": {"type": "dict", "properties": {"shape": {"type": "string"}}, "required": []},
}
ANSWER = {
    "geo.area": {
        "shape": ["circle", "round shape"],
        "size": [2.0, 2.5],
        "count": [1, ""],
        "tags": [["Red", "big"], ""],
        "opts": [{"unit": ["square meters", "m2"], "round": [2, ""]}, ""],
        "points": [[{"x": [1], "y": [2.0, ""]}], ""],
        "exact": ["", False],
    }
}


def simple(*calls, **kw):
    return ast_match(list(calls), [ANSWER], [DOC], "simple", **kw)


def test_ast_accepts_bfcl_equivalents():
    assert simple(call("geo.area", shape="circle", size=2.0)) == (True, None)
    # int for float, case/space/punctuation-free strings, every optional given with an allowed value
    full = call(
        "geo.area",
        shape="Round-Shape",
        size=2,
        count=1,
        tags=["red", "B.I.G"],
        opts={"unit": "Square_Meters"},
        points=[{"x": 1}],
        exact=False,
    )
    assert simple(full) == (True, None)


@pytest.mark.parametrize(
    ("arguments", "error_type"),
    [
        ({"shape": "circle"}, "simple_function_checker:missing_required"),
        ({"shape": "circle", "size": 2.0, "colour": "red"}, "simple_function_checker:unexpected_param"),
        ({"shape": "circle", "size": "2.0"}, "type_error:simple"),
        ({"shape": "circle", "size": 2.0, "count": 1.0}, "type_error:simple"),  # float for integer
        ({"shape": "circle", "size": 2.0, "count": True}, "type_error:simple"),  # bool is not int
        ({"shape": "square", "size": 2.0}, "value_error:string"),
        ({"shape": "circle", "size": 3.0}, "value_error:others"),
        ({"shape": "circle", "size": 2.0, "tags": ["big", "red"]}, "value_error:list/tuple"),  # order matters
        # the optional marker "" passes upstream's nested type check, so the list comparison rejects it
        ({"shape": "circle", "size": 2.0, "tags": ["red", 7]}, "value_error:list/tuple"),
        ({"shape": "circle", "size": 2.0, "opts": {"unit": "m2", "x": 1}}, "value_error:dict_key"),
        ({"shape": "circle", "size": 2.0, "opts": {"unit": "feet"}}, "value_error:dict_value"),
        ({"shape": "circle", "size": 2.0, "opts": {"round": 2}}, "value_error:dict_key"),  # unit not optional
        ({"shape": "circle", "size": 2.0, "points": [{"x": 1}, {"x": 1}]}, "value_error:list_dict_count"),
        # upstream reports the error of the last alternative tried ("" as an empty list)
        ({"shape": "circle", "size": 2.0, "points": [{"x": 2}]}, "value_error:list_dict_count"),
    ],
)
def test_ast_rejects(arguments, error_type):
    ok, error = simple({"name": "geo.area", "arguments": arguments})
    assert not ok and error.split(": ")[0] == error_type, error


def test_ast_nested_types_and_dict_values():
    answer = {"geo.area": {"shape": ["circle"], "size": [2.0], "tags": [["red", "big"]], "points": [[{"x": [1]}]]}}
    ok, error = ast_match(
        [call("geo.area", shape="circle", size=2.0, tags=["red", 7], points=[{"x": 1}])], [answer], [DOC], "simple"
    )
    assert not ok and error.startswith("type_error:nested")
    ok, error = ast_match(
        [call("geo.area", shape="circle", size=2.0, tags=["red", "big"], points=[{"x": 2}])], [answer], [DOC], "simple"
    )
    assert not ok and error.startswith("value_error:dict_value")


def test_ast_optional_parameters_and_names():
    answer = {"geo.area": {"shape": ["circle"], "size": [2.0]}}
    # an answer parameter without "" must be given (BFCL: "not marked as optional")
    ok, error = ast_match(
        [call("geo.area", shape="circle", size=2.0)],
        [{"geo.area": {**answer["geo.area"], "count": [3]}}],
        [DOC],
        "simple",
    )
    assert not ok and error.startswith("simple_function_checker:missing_optional")
    # a doc parameter absent from the answer may not be given
    ok, error = ast_match([call("geo.area", shape="circle", size=2.0, count=1)], [answer], [DOC], "simple")
    assert not ok and error.startswith("simple_function_checker:unexpected_param")
    ok, error = simple(call("geo_area", shape="circle", size=2.0))
    assert not ok and error.startswith("simple_function_checker:wrong_func_name")
    assert simple(call("geo_area", shape="circle", size=2.0), underscore_to_dot=True) == (True, None)


def test_ast_rejects_outputs_not_in_call_shape():
    ok, error = simple({"name": "geo.area", "arguments": '{"shape": "circle", "size": 2.0}'})
    assert not ok and error.startswith("ast_decoder:decoder_wrong_output_format")


def test_ast_multiple_and_parallel():
    functions = [OTHER, DOC]
    perimeter = {"geo.perimeter": {"shape": ["square"]}}
    assert ast_match([call("geo.area", shape="circle", size=2.0)], [ANSWER], functions, "multiple") == (True, None)
    ok, error = ast_match([call("geo.perimeter", shape="circle")], [ANSWER], functions, "multiple")
    assert not ok and error.startswith("simple_function_checker:wrong_func_name")
    both = [call("geo.perimeter", shape="Square"), call("geo.area", shape="circle", size=2.5)]
    for category in ("parallel", "parallel_multiple", "live_parallel_multiple"):
        assert ast_match(both, [ANSWER, perimeter], functions, category) == (True, None)
        assert ast_match(both[::-1], [ANSWER, perimeter], functions, category) == (True, None)
        ok, error = ast_match(both[:1], [ANSWER, perimeter], functions, category)
        assert not ok and error.startswith("parallel_function_checker_no_order:wrong_count")
        ok, error = ast_match([both[0], both[0]], [ANSWER, perimeter], functions, category)
        assert not ok and error.startswith("parallel_function_checker_no_order:cannot_find_match")


def test_ast_irrelevance():
    assert ast_match([], None, [DOC], "irrelevance") == (True, None)
    assert ast_match([call("geo.area")], None, [DOC], "live_irrelevance")[0] is False


def test_aggregate():
    def result(source, category, kind, *, parsed=True, exact=True, ast=None, calls=None):
        return {
            "id": f"{source}-{category}",
            "source": source,
            "category": category,
            "kind": kind,
            "parsed": parsed,
            "name_correct": exact,
            "args_exact": exact,
            "exact": exact,
            "ast": ast,
            "calls": calls or [],
        }

    results = [
        result("data", "simple", "call"),
        result("data", "simple", "call", parsed=False, exact=False),
        result("data", "irrelevance", "irrelevance", exact=False, calls=[call("f")]),
        result("bfcl-simple", "simple_python", "call", ast=True),
        result("bfcl-simple", "simple_python", "call", ast=False, exact=False),
        result("bfcl-irrelevance", "irrelevance", "irrelevance", ast=True, exact=False),
    ]
    metrics = aggregate(results)
    overall = metrics["overall"]
    assert overall["n"] == 6
    assert overall["parse_rate"] == pytest.approx(5 / 6)
    assert overall["whole_call_exact_match"] == overall["tool_name_accuracy"] == pytest.approx(2 / 4)
    assert overall["ast_accuracy"] == pytest.approx(2 / 3)
    assert (overall["n_irrelevance"], overall["irrelevance_accuracy"], overall["calls_when_none"]) == (2, 0.5, 1)
    assert set(metrics["by_source"]) == {"data", "bfcl-simple", "bfcl-irrelevance"}
    data = metrics["by_source"]["data"]
    assert data["ast_accuracy"] is None and data["argument_exact_match"] == 0.5
    assert metrics["by_category"]["irrelevance"]["tool_name_accuracy"] is None
    assert metrics["by_category"]["irrelevance"]["n_irrelevance"] == 2
    assert aggregate([])["overall"]["n"] == 0
