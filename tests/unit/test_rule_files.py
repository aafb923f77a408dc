"""Rule files as rule authors meet them: the checker, the tests beside the rules, explain."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.cli import main
from stream.decide.rulebook import load_rulebook
from stream.decide.yamlfile import parse_yaml
from stream.errors import RuleFileError
from tests.helpers import RULES


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    target = tmp_path / "rules"
    shutil.copytree(RULES, target)
    return target


def check(path: Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["rules", "check", str(path)])
    return result.exit_code, result.output


BROKEN = """\
ruleset: broken
pattern: cart_stall
rules:
  - id: broken.syntax
    owner: me
    priority: 5
    when: category == 'books'
    then: {type: reminder, channel: push
  - id: broken.field
    owner: me
    priority: 4
    colour: blue
    when: category == 'books'
    then: {type: reminder, channel: push}
  - id: broken.expression
    owner: me
    priority: 3
    when: category == 'books' and cart_value >
    then: {type: reminder, channel: push}
"""


def test_check_reports_a_syntax_error_an_unknown_field_and_a_bad_expression(rules: Path) -> None:
    path = rules / "broken.rules.yaml"
    path.write_text(BROKEN)
    code, output = check(rules)
    assert code != 0
    lines = output.splitlines()
    assert any(ln.startswith(f"{path}:8: YAML syntax error") for ln in lines), output
    assert any(ln.startswith(f"{path}:12: colour: unknown field") for ln in lines), output
    assert any(ln.startswith(f"{path}:18: when: expected a value") for ln in lines), output


@pytest.mark.parametrize(
    ("rule", "fragment"),
    [
        ("when: basket == 3", "unknown fact field 'basket'"),
        ("when: cart_value == 'big'", "cart_value holds number"),
        ("when: category == 'x'\n    then: {type: teleport, channel: push}", "teleport"),
        ("when: open('/etc/passwd') == 'x'", "function calls are not allowed"),
    ],
)
def test_each_problem_names_its_file_and_line(rules: Path, rule: str, fragment: str) -> None:
    path = rules / "extra.rules.yaml"
    then = "" if "then:" in rule else "\n    then: {type: reminder, channel: push}"
    path.write_text(
        f"ruleset: extra\nrules:\n  - id: extra.one\n    owner: me\n    priority: 1\n"
        f"    {rule}{then}\n"
    )
    with pytest.raises(RuleFileError) as info:
        load_rulebook(rules)
    [problem] = info.value.problems
    assert problem.path == str(path)
    assert problem.line >= 3
    assert fragment in problem.message


def test_duplicate_ids_and_rules_that_can_never_win(rules: Path) -> None:
    path = rules / "extra.rules.yaml"
    path.write_text("""\
ruleset: extra
pattern: unpaid_order
rules:
  - id: unpaid_order.reminder
    owner: me
    priority: 1
    when: amount > 5
    then: {type: reminder, channel: push}
  - id: extra.never
    owner: me
    priority: 5
    when: amount >= 200 and segment == 'vip'
    then: {type: reminder, channel: sms}
""")
    with pytest.raises(RuleFileError) as info:
        load_rulebook(rules)
    messages = {(p.line, p.message.split(":")[0]) for p in info.value.problems}
    text = "\n".join(str(p) for p in info.value.problems)
    assert f"duplicate rule id 'unpaid_order.reminder' (first at {path}:4)" in text
    # unpaid_order.big.sms (priority 50, amount >= 200) matches whenever extra.never does
    assert "rule 'extra.never' can never win: 'unpaid_order.big.sms'" in text, messages


def test_a_condition_too_complex_for_the_engine_is_a_problem_at_its_line(rules: Path) -> None:
    alternatives = " or ".join(f"(price == {i} or qty == {i})" for i in range(8))
    wide = " and ".join(f"({alternatives})" for _ in range(4))
    (rules / "wide.rules.yaml").write_text(
        f"ruleset: wide\nrules:\n  - id: wide.one\n    owner: me\n    priority: 1\n"
        f'    when: "{wide}"\n    then: {{type: reminder, channel: push}}\n'
    )
    with pytest.raises(RuleFileError) as info:
        load_rulebook(rules)
    [problem] = info.value.problems
    assert (Path(problem.path).name, problem.line) == ("wide.rules.yaml", 3)
    assert "split it into several rules" in problem.message


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.text(max_size=400)
    | st.sampled_from(
        [
            "!!python/object/apply:os.system ['id']",
            "ruleset: x\nrules:\n  - !!python/name:os.system\n",
            "ruleset: [\n",
            "rules: {a: 1}\n",
            "ruleset: x\nrules:\n  - id: a\n    owner: b\n    priority: -1\n    when: 'x ='\n",
            "\x00\x01",
        ]
    )
)
def test_no_rule_file_content_crashes_the_checker_or_runs_code(rules: Path, text: str) -> None:
    path = rules / "fuzz.rules.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_rulebook(rules)
    except RuleFileError as exc:
        assert exc.problems
        for problem in exc.problems:
            assert problem.line >= 1
            assert Path(problem.path).name in {"fuzz.rules.yaml", "rules"}


def test_rule_tests_beside_the_shipped_rules_pass() -> None:
    result = CliRunner().invoke(main, ["rules", "test", str(RULES)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1].endswith(" passed, 0 failed")
    assert "PASS" in result.output


def test_a_failing_rule_test_fails_the_run(rules: Path) -> None:
    (rules / "wrong.test.yaml").write_text(
        "cases:\n  - name: books get a coupon\n"
        "    fact: {pattern: cart_stall, category: books, price: 9.0, cart_value: 9.0}\n"
        "    expect: {rule: cart_stall.fresh_food.coupon}\n"
    )
    result = CliRunner().invoke(main, ["rules", "test", str(rules)])
    assert result.exit_code == 1
    assert "FAIL" in result.output and "books get a coupon" in result.output
    assert "expected rule 'cart_stall.fresh_food.coupon', got 'cart_stall.books.reminder'" in (
        result.output
    )


def test_explain_prints_the_decision_and_why(tmp_path: Path) -> None:
    fact = tmp_path / "fact.json"
    fact.write_bytes(
        orjson.dumps(
            {
                "pattern": "payment_stall",
                "amount": 80.0,
                "failure_reason": "card_declined",
                "payment_failures": 1,
            }
        )
    )
    result = CliRunner().invoke(main, ["rules", "explain", str(fact), "--rules-dir", str(RULES)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("payment_stall.declined.other_method: payment_coupon via push")
    assert '"failure_reason": "card_declined"' in result.output
    assert '"intent"' in result.output


@pytest.mark.parametrize(
    ("switch", "result"), [("enabled: false", "disabled"), ("mode: shadow", "shadow")]
)
def test_kill_switch_and_shadow_mode_decide_but_send_nothing(
    rules: Path, switch: str, result: str
) -> None:
    from tests.helpers import T0, EventMaker, core, rec

    path = rules / "checkout_abandon.rules.yaml"
    path.write_text(
        path.read_text().replace('    when: "true"\n', f'    when: "true"\n    {switch}\n')
    )
    ev, c = EventMaker(), core(rules=rules)
    start = ev(
        "checkout_start",
        "kim",
        T0,
        checkout_id="c1",
        amount=20.0,
        items=[{"sku": "s", "category": "garden", "price": 20.0}],
    )
    out = c.step([rec(start), rec(ev("cart_view", "clock", T0 + 3_600_000))], now_ms=None)
    assert [f.pattern for f in out.facts] == ["checkout_abandon"]
    assert out.commands == []
    assert out.decisions == [("checkout_abandon", "checkout_abandon.reminder", result)]


def test_aliases_that_expand_without_end_are_refused_quickly(rules: Path) -> None:
    """A "billion laughs" file (a few hundred bytes of aliases of aliases) is refused
    before anything expands it; the old rules would keep deciding."""
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        prev, name = chr(96 + i), chr(97 + i)
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    path = rules / "laughs.rules.yaml"
    path.write_text("\n".join(lines) + "\n")
    assert path.stat().st_size < 500
    with pytest.raises(RuleFileError) as caught:
        load_rulebook(rules)
    [problem] = caught.value.problems
    assert Path(problem.path).name == "laughs.rules.yaml"
    assert "expands to more than 100,000 YAML values" in problem.message


def test_a_few_aliases_are_fine(rules: Path) -> None:
    doc = parse_yaml("base: &b {max_per_day: 2}\nother: *b\n", "f.yaml")
    assert doc.data == {"base": {"max_per_day": 2}, "other": {"max_per_day": 2}}


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_nesting_hundreds_deep_is_refused_not_a_crash(rules: Path, depth: int) -> None:
    path = rules / "deep.rules.yaml"
    path.write_text("ruleset: " + "[" * depth + "]" * depth + "\n")
    with pytest.raises(RuleFileError) as caught:
        load_rulebook(rules)
    assert [p.message for p in caught.value.problems] == [
        "the YAML is nested too deeply (hundreds of levels)"
    ]
