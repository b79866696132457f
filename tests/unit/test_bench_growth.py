"""`python -m bench growth` runs quickly with small sizes and prints every figure the issue asks
for: bytes per event on each output topic and changelog, state, webhook body, events/s."""

from bench import growth


def test_a_quick_growth_run_reports_every_figure_and_the_goal(capsys):
    assert growth.main(["--sizes", "1,10,20", "--customers", "3", "--days", "31"]) == 0
    out = capsys.readouterr().out
    for figure in ("loyalty.results", "notifications", "profiles.changes", "changelog customers",
                   "changelog events", "changelog timers", "state", "webhook body", "events/s"):
        assert f"  {figure} " in out, figure
    assert "day   30:" in out and "goal (every figure flat within 20%):" in out
