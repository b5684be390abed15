"""Scoring predicted tool calls: exact match against unified gold calls, BFCL's AST rules, and the aggregate.

`ast_match` reimplements the Python-language rules of the Berkeley Function Calling Leaderboard's checker,
bfcl-eval 2026.3.23, file bfcl_eval/eval_checker/ast_eval/ast_checker.py (cited per rule below as
`ast_checker.<function>`), plus the irrelevance rule of bfcl_eval/eval_checker/eval_runner.py
(`_evaluate_single_relevance_entry`, `is_empty_output` in bfcl_eval/utils.py). It keeps upstream's exact
semantics, quirks included (Python `==`/`in` comparisons, one level of nested type checks, strings compared
after `standardize_string`), so a score here is the score BFCL would give the same decoded calls.
bfcl_eval itself is never imported: it pulls a large dependency tree.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

__all__ = ["aggregate", "ast_match", "score_calls"]

# ast_checker.PYTHON_TYPE_MAPPING
_PYTHON_TYPE = {
    "string": str,
    "integer": int,
    "float": float,
    "boolean": bool,
    "array": list,
    "tuple": list,
    "dict": dict,
    "any": str,
}
# ast_checker.PYTHON_NESTED_TYPE_CHECK_LIST
_NESTED = ("array", "tuple")


class _Fail(Exception):
    """One failed check: `kind` is upstream's error_type, `message` its error text."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")


# ---- unified gold ------------------------------------------------------------------------------------


def _same(a: Any, b: Any) -> bool:
    """JSON equality: 1 equals 1.0 (a model may write either) but True is not 1; dict key order is free."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(v, b[k]) for k, v in a.items())
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def score_calls(pred: list[dict[str, Any]], gold: list[dict[str, Any]]) -> dict[str, bool]:
    """name_correct: same multiset of names; args_exact: every gold call matched by a distinct predicted call
    with the same name and equal arguments (order-free, same count); exact: both."""
    name_correct = Counter(c.get("name") for c in pred) == Counter(c.get("name") for c in gold)
    args_exact = len(pred) == len(gold)
    if args_exact:
        unused = list(pred)
        for g in gold:
            same = (
                k
                for k, p in enumerate(unused)
                if p.get("name") == g.get("name") and _same(p.get("arguments"), g.get("arguments"))
            )
            hit = next(same, None)
            if hit is None:
                args_exact = False
                break
            unused.pop(hit)
    return {"name_correct": name_correct, "args_exact": args_exact, "exact": name_correct and args_exact}


# ---- BFCL AST rules ------------------------------------------------------------------------------------


def _standardize_string(s: str) -> str:
    # ast_checker.standardize_string: drop spaces and ,./-_*^, lowercase, ' → "
    return re.sub(r"[ \,\.\/\-\_\*\^]", "", s).lower().replace("'", '"')


def _answer_type(possible: list[Any]) -> type | None:
    # ast_checker.get_possible_answer_type: the type of the first non-optional ("") allowed value
    for answer in possible:
        if answer != "":
            return type(answer)
    return None


def _type_check(param: str, value: Any, possible: list[Any], expected: type, nested: type | None) -> bool:
    """ast_checker.type_checker; returns is_variable (the value matches the answers' type, not the doc's)."""
    answer_type = _answer_type(possible)
    is_variable = answer_type is not None and answer_type != expected
    if type(value) is expected:
        if nested is None:
            return is_variable
        # one level of element type checks: every element must pass against some list-valued answer
        for item in possible:
            ok = True
            if type(item) is list:
                for element in value:
                    try:
                        _type_check(param, element, item, nested, None)
                    except _Fail:
                        ok = False
                        break
            if ok:
                return is_variable
        raise _Fail(
            "type_error:nested",
            f"Nested type checking failed for parameter {param!r}. Expected inner type {nested.__name__}. "
            f"Parameter value: {value!r}.",
        )
    # a value of the answers' own type is a 'variable' (upstream: e.g. a name standing for a value)
    if answer_type is not None and type(value) is answer_type:
        return True
    raise _Fail(
        "type_error:simple",
        f"Incorrect type for parameter {param!r}. Expected type {expected.__name__}, got {type(value).__name__}. "
        f"Parameter value: {value!r}.",
    )


def _string_check(param: str, value: str, possible: list[Any]) -> None:
    # ast_checker.string_checker: case/punctuation-insensitive membership among the string answers
    if _standardize_string(value) not in [_standardize_string(a) for a in possible if type(a) is str]:
        raise _Fail(
            "value_error:string", f"Invalid value for parameter {param!r}: {value!r}. Expected one of {possible}"
        )


def _list_check(param: str, value: list[Any], possible: list[Any]) -> None:
    # ast_checker.list_checker: string elements standardized on both sides, then list equality with an answer.
    # Upstream iterates each answer with len()/indexing, so the optional marker "" becomes [] (matches []).
    got = [_standardize_string(v) if type(v) is str else v for v in value]
    answers = [[_standardize_string(x) if type(x) is str else x for x in answer] for answer in possible]
    if got not in answers:
        raise _Fail(
            "value_error:list/tuple", f"Invalid value for parameter {param!r}: {value!r}. Expected one of {possible}"
        )


def _dict_check(param: str, value: dict[str, Any], possible: list[Any]) -> None:
    # ast_checker.dict_checker: some answer dict (not "") must accept every key's value (strings standardized)
    # and every answer key not marked optional ("" among its values) must be present
    error = _Fail("dict_checker:unclear", f"No allowed value for parameter {param!r}: {value!r}.")
    for answer in possible:
        if answer == "":
            continue
        try:
            for key, v in value.items():
                if key not in answer:
                    raise _Fail("value_error:dict_key", f"Unexpected dict key parameter: {key!r}.")
                got = _standardize_string(v) if type(v) is str else v
                allowed = [_standardize_string(a) if type(a) is str else a for a in answer[key]]
                if got not in allowed:
                    raise _Fail(
                        "value_error:dict_value",
                        f"Invalid value for parameter {key!r}: {v!r}. Expected one of {allowed}.",
                    )
            for key, allowed in answer.items():
                if key not in value and "" not in allowed:
                    raise _Fail("value_error:dict_key", f"Missing dict key parameter: {key!r}.")
            return
        except _Fail as exc:
            error = exc
    raise error


def _list_dict_check(param: str, value: list[Any], possible: list[Any]) -> None:
    # ast_checker.list_dict_checker: same length as an answer list, each dict checked against its position
    error = _Fail("list_dict_checker:unclear", f"No allowed value for parameter {param!r}: {value!r}.")
    for answer in possible:
        if len(value) != len(answer):
            error = _Fail("value_error:list_dict_count", "Wrong number of dictionaries in the list.")
            continue
        try:
            for got, want in zip(value, answer, strict=True):
                _dict_check(param, got, [want])
            return
        except _Fail as exc:
            error = exc
    raise error


def _convert_name(name: str, underscore_to_dot: bool) -> str:
    # ast_checker.convert_func_name: models whose API forbids '.' in names were given '_' instead
    return re.sub(r"\.", "_", name) if underscore_to_dot and "." in name else name


def _simple_check(doc: dict[str, Any] | None, output: dict[str, Any], answer: dict[str, Any], u2d: bool) -> None:
    """ast_checker.simple_function_checker (Python branch) for one call `output` = {name: {param: value}}."""
    expected_name, possible = next(iter(answer.items()))
    if doc is None:
        raise _Fail("simple_function_checker:no_doc", f"No function doc for {expected_name!r}.")
    func_name = _convert_name(doc["name"], u2d)
    if func_name not in output:
        raise _Fail("simple_function_checker:wrong_func_name", f"Function name {func_name!r} not in the model output.")
    params = output[func_name]
    details = doc["parameters"]["properties"]
    for param in doc["parameters"].get("required", []):
        if param not in params:
            raise _Fail("simple_function_checker:missing_required", f"Missing required parameter: {param!r}.")
    for param, given in params.items():
        if param not in details or param not in possible:
            raise _Fail("simple_function_checker:unexpected_param", f"Unexpected parameter: {param!r}.")
        type_name = details[param]["type"]
        if type_name not in _PYTHON_TYPE:
            raise _Fail("type_error:unsupported", f"Unsupported BFCL type {type_name!r} for parameter {param!r}.")
        expected = _PYTHON_TYPE[type_name]
        nested = _PYTHON_TYPE.get(details[param]["items"]["type"]) if type_name in _NESTED else None
        if type_name in _NESTED and nested is None:
            raise _Fail("type_error:unsupported", f"Unsupported BFCL item type for parameter {param!r}.")
        # upstream: Python's int → float promotion
        value = float(given) if type_name == "float" and type(given) is int else given
        is_variable = _type_check(param, value, possible[param], expected, nested)
        if not is_variable:
            if expected is dict:
                _dict_check(param, value, possible[param])
                continue
            if expected is list and nested is dict:
                _list_dict_check(param, value, possible[param])
                continue
            if expected is str:
                _string_check(param, value, possible[param])
                continue
            if expected is list:
                _list_check(param, value, possible[param])
                continue
        if value not in possible[param]:
            raise _Fail(
                "value_error:others",
                f"Invalid value for parameter {param!r}: {value!r}. Expected one of {possible[param]}.",
            )
    for param, allowed in possible.items():
        if param not in params and "" not in allowed:
            raise _Fail(
                "simple_function_checker:missing_optional",
                f"Optional parameter {param!r} not provided and not marked as optional.",
            )


def _find_doc(functions: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    # ast_checker.find_description
    return next((f for f in functions if f["name"] == name), None)


def _bfcl_output(pred: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # decoded calls in BFCL's layout [{name: {param: value}}]; eval_runner rejects any other shape
    # (utils.is_function_calling_format_output: arguments must be a dict)
    out = []
    for call in pred:
        args = call.get("arguments")
        if not isinstance(call.get("name"), str) or type(args) is not dict:
            raise _Fail("ast_decoder:decoder_wrong_output_format", f"Not a {{name: {{arguments}}}} call: {call!r}.")
        out.append({call["name"]: args})
    return out


def _check(
    output: list[dict[str, Any]],
    answers: list[dict[str, Any]],
    functions: list[dict[str, Any]],
    category: str,
    u2d: bool,
) -> None:
    # ast_checker.ast_checker: 'parallel' in the category → any-order matching, 'multiple' → pick the function,
    # else simple: exactly one call
    checker = (
        "parallel_function_checker_no_order"
        if "parallel" in category
        else "multiple_function_checker"
        if "multiple" in category
        else "simple_function_checker"
    )
    if len(output) != (1 if checker == "simple_function_checker" else len(answers)):
        raise _Fail(f"{checker}:wrong_count", "Wrong number of functions.")
    if "parallel" in category:
        # ast_checker.parallel_function_checker_no_order: each answer (in order) takes the first unmatched
        # output that passes
        matched: set[int] = set()
        for i, answer in enumerate(answers):
            doc = _find_doc(functions, next(iter(answer)))
            errors = []
            for k, call in enumerate(output):
                if k in matched:
                    continue
                try:
                    _simple_check(doc, call, answer, u2d)
                except _Fail as exc:
                    errors.append(f"output {k}: {exc}")
                    continue
                matched.add(k)
                break
            else:
                raise _Fail(
                    "parallel_function_checker_no_order:cannot_find_match",
                    f"No model output matches answer {i}. " + " ".join(errors),
                )
    elif "multiple" in category:
        # ast_checker.multiple_function_checker
        _simple_check(_find_doc(functions, next(iter(answers[0]))), output[0], answers[0], u2d)
    else:
        # ast_checker.simple_function_checker with the first (only) function doc
        _simple_check(functions[0] if functions else None, output[0], answers[0], u2d)


def ast_match(
    pred: list[dict[str, Any]],
    possible_answer: list[dict[str, Any]],
    functions: list[dict[str, Any]],
    category: str,
    *,
    underscore_to_dot: bool = False,
) -> tuple[bool, str | None]:
    """BFCL's AST verdict for predicted calls [{"name", "arguments"}] → (ok, error reason or None).

    possible_answer: BFCL ground truth [{func_name: {param: [allowed values]}}] ("" allowed = may be omitted);
    functions: BFCL's original function docs (BFCL type names); category: a BFCL category or bench name
    ('parallel'/'multiple'/'irrelevance' in it select the rule as upstream does). underscore_to_dot: the
    model was shown names with '.' replaced by '_' (upstream's per-model flag; False for chat-template models).
    """
    if "irrelevance" in category:
        # eval_runner._evaluate_single_relevance_entry: correct when no function call is made
        return (True, None) if not pred else (False, "irrelevance_error: the model called a function")
    if "relevance" in category:
        return (True, None) if pred else (False, "relevance_error: no function call")
    try:
        _check(_bfcl_output(pred), possible_answer, functions, category, underscore_to_dot)
    except _Fail as exc:
        return False, str(exc)
    return True, None


# ---- aggregate -------------------------------------------------------------------------------------------


def _mean(values: list[bool]) -> float | None:
    return sum(values) / len(values) if values else None


def _metrics(results: list[dict[str, Any]]) -> dict[str, Any]:
    calls = [r for r in results if r.get("kind", "call") == "call"]
    irrelevant = [r for r in results if r.get("kind") == "irrelevance"]
    with_ast = [r for r in results if r.get("ast") is not None]
    return {
        "n": len(results),
        "parse_rate": _mean([bool(r.get("parsed")) for r in results]),
        "tool_name_accuracy": _mean([bool(r.get("name_correct")) for r in calls]),
        "argument_exact_match": _mean([bool(r.get("args_exact")) for r in calls]),
        "whole_call_exact_match": _mean([bool(r.get("exact")) for r in calls]),
        "ast_accuracy": _mean([bool(r["ast"]) for r in with_ast]),
        "n_irrelevance": len(irrelevant),
        "irrelevance_accuracy": _mean([not r.get("calls") for r in irrelevant]),
        "calls_when_none": sum(1 for r in irrelevant if r.get("calls")),
    }


def aggregate(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Metrics over per-item results: {"overall": {...}, "by_source": {src: {...}}, "by_category": {cat: {...}}}.

    Call metrics (tool_name_accuracy, argument_exact_match, whole_call_exact_match) cover 'call' items;
    ast_accuracy covers items scored by BFCL's rules (`ast` not None; None when there are none);
    irrelevance_accuracy is the share of 'irrelevance' items answered without a call. A rate over no
    items is None.
    """
    by_source: dict[str, list[dict[str, Any]]] = {}
    by_category: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by_source.setdefault(str(r.get("source")), []).append(r)
        by_category.setdefault(str(r.get("category")), []).append(r)
    return {
        "overall": _metrics(results),
        "by_source": {k: _metrics(v) for k, v in sorted(by_source.items())},
        "by_category": {k: _metrics(v) for k, v in sorted(by_category.items())},
    }
