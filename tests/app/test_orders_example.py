"""examples/orders end to end: `make -C examples/orders run` builds the example, starts its own
ferryd, the workers and the outbox relay, places five orders, crashes the relay once between
publish and mark, and checks every effect (run.sh exits 0 only if all its checks held)."""
import os
import subprocess

from brokers import ROOT


def test_orders_example_runs_end_to_end_with_every_check_passing(tmp_path):
    env = dict(os.environ, ORDERS_WORK=str(tmp_path / "orders"))
    env.pop("FERRY_URL", None)  # its own ferryd (FERRYD picks the binary, e.g. the ASan build)
    r = subprocess.run(["make", "-s", "-C", os.path.join(ROOT, "examples", "orders"), "run"], env=env,
                       capture_output=True, text=True, timeout=240)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-6000:]
    assert "all checks passed" in out
    ok = [line for line in out.splitlines() if line.startswith("ok: ")]
    for check in ("every order's events were sent", "reached inventory twice, reserved once",
                  "failed once and was paid on the retry", "payment request arrived twice, charged once",
                  "declined card went to payments.dead", "was dead-lettered by inventory",
                  "one email per order"):
        assert [line for line in ok if check in line], (check, out[-4000:])
    assert "FAILED" not in out
    # The inventory saw order 5's event twice and applied it once: widget 10 - 2 - 1 - 3 = 4.
    inv = (tmp_path / "orders" / "inventory.log").read_text()
    assert inv.count("order 5 reserved 3 x widget (stock now 4)") == 1, inv
