"""benchmarks/study_ntp_vs_sftmix.py runs end to end on a tiny model and a tiny profile, and its arms differ only
where they should: the same held-out ids everywhere, the same pairs in the same order for ntp and the Mixup arms
that keep the real split, other pairs for the random split."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

from tests.trainer_plugin.test_train import profile  # noqa: F401  (the module-scoped tiny profile fixture)

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "study_ntp_vs_sftmix.py"


def _study():
    spec = importlib.util.spec_from_file_location("study_ntp_vs_sftmix", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_study_smoke(tiny_llama, profile, tmp_path):  # noqa: F811
    study = _study()
    out = tmp_path / "res.json"
    argv = [
        "--profile", str(profile[0]), "--model", str(tiny_llama), "--device", "cpu",
        "--seeds", "2", "--epochs", "1", "--batch-size", "4", "--no-lora", "--max-length", "128",
        "--sweep-lr", "1e-4,1e-3", "--sweep-extend", "0",
        "--out", str(out), "--workdir", str(tmp_path / "work"), "--no-figure",
    ]  # fmt: skip
    study.main(argv)
    res = json.loads(out.read_text())
    assert set(res) >= {"setup", "runs", "confidence_std"}
    setup, arms, seeds = res["setup"], list(study.ARMS), [0, 1]
    assert setup["seeds"] == seeds and setup["learning_rate"] in (1e-4, 1e-3)
    assert [s["lr"] for s in setup["lr_sweep"]] == [1e-4, 1e-3]
    assert setup["machine"]["cpu"] and setup["versions"]["torch"]

    # Every arm, seed, epoch (0 = before training, 1) and split; finite numbers.
    keys = {(r["arm"], r["seed"], r["epoch"], r["split"]) for r in res["runs"]}
    assert keys == {
        (a, s, e, sp) for a in arms for s in seeds for e in (0, 1) for sp in ("all", "confident", "unconfident")
    }
    assert len(res["runs"]) == len(keys)
    assert all(math.isfinite(r["heldout_nll"]) for r in res["runs"])
    assert {(c["arm"], c["seed"]) for c in res["confidence_std"]} == {(a, s) for a in arms for s in seeds}
    assert all(math.isfinite(c["value"]) and c["value"] >= 0 for c in res["confidence_std"])

    # The same held-out examples (4 of 16, stratified) for every arm and seed, and the same untrained model's NLL.
    assert setup["n_heldout"] == 4 and setup["n_train"] == 12
    assert len(set(setup["heldout_digest"].values())) == 1
    before = {r["heldout_nll"] for r in res["runs"] if r["epoch"] == 0 and r["split"] == "all"}
    assert max(before) - min(before) < 1e-6

    # ntp and the Mixup arms on the real split saw the same pairs in the same order; the random split did not.
    pairs = setup["pairs_digest"]
    for s in seeds:
        assert pairs[f"ntp/{s}"] == pairs[f"sftmix/{s}"] == pairs[f"mixup_equal/{s}"]
        assert pairs[f"sftmix_random_split/{s}"] != pairs[f"ntp/{s}"]
        assert setup["random_split"][f"sftmix_random_split/{s}"]["n_confident"] == 6
    assert pairs["ntp/0"] != pairs["ntp/1"]

    # The Mixup term changes training: sftmix ends elsewhere than ntp.
    final = {(r["arm"], r["seed"]): r["heldout_nll"] for r in res["runs"] if r["epoch"] == 1 and r["split"] == "all"}
    assert final[("sftmix", 0)] != final[("ntp", 0)]
    assert {(row["arm"], row["split"]) for row in res["summary"]} == {
        (a, sp) for a in arms for sp in ("all", "confident", "unconfident")
    }


def _runs(final: dict[tuple[str, int], float]) -> list[dict]:
    """Runs with epoch 0 at 9.0 and the given final (epoch 1) NLL, the same on every split."""
    return [
        {"arm": arm, "seed": seed, "epoch": epoch, "split": split, "heldout_nll": 9.0 if epoch == 0 else value}
        for (arm, seed), value in final.items()
        for epoch in (0, 1)
        for split in ("all", "confident", "unconfident")
    ]


def test_summary_pairs_each_seed_with_its_own_ntp_run(tmp_path):
    """The difference against ntp is taken seed by seed: a seed that is worse for both arms cancels out."""
    study = _study()
    final = {
        ("ntp", 0): 2.0,
        ("ntp", 1): 3.0,
        ("ntp", 2): 4.0,
        ("sftmix", 0): 1.9,
        ("sftmix", 1): 2.9,
        ("sftmix", 2): 3.9,
    }
    rows = {(r["split"], r["arm"]): r for r in study.summary(_runs(final), ["ntp", "sftmix"], [0, 1, 2])}
    mix = rows[("all", "sftmix")]
    assert math.isclose(mix["mean"], 2.9) and math.isclose(mix["std"], 1.0)  # ddof=1 over the three seeds
    assert math.isclose(mix["diff_mean"], -0.1) and mix["diff_std"] < 1e-12  # paired: the seed spread cancels
    assert rows[("all", "ntp")]["diff_mean"] == 0 and mix["n_seeds"] == 3
    assert {split for split, _ in rows} == {"all", "confident", "unconfident"}

    # The README's tables, from a finished study's JSON by --report (no training).
    stds = [{"arm": "ntp", "seed": s, "value": 10.0} for s in range(3)]
    stds += [{"arm": "sftmix", "seed": s, "value": v} for s, v in enumerate((9.0, 9.5, 8.5))]
    out = {"setup": {"seeds": [0, 1, 2], "arms": {"ntp": {}, "sftmix": {}}}, "runs": _runs(final)}
    out |= {"summary": list(rows.values()), "confidence_std": stds}
    path = tmp_path / "res.json"
    path.write_text(json.dumps(out))
    study.main(["--report", str(path), "--no-figure"])
    md = path.with_suffix(".md").read_text()
    assert "| all | sftmix | 2.9000 ± 1.0000 | -0.1000 ± 0.0000 | 3/3 |" in md
    assert "| sftmix | 9.000 ± 0.500 | -10.0% (range -15.0% to -5.0%) |" in md
    assert "| sftmix | 2.9000 ± 1.0000 | -0.1000 ± 0.0000 | 3/3 |" in md  # best epoch after training: epoch 1 here


def test_figure_is_a_png_with_one_panel_per_split(tmp_path):
    import matplotlib.image

    study = _study()
    final = {(arm, seed): 2.0 + 0.1 * seed for arm in ("ntp", "sftmix") for seed in (0, 1)}
    path = study.plot(_runs(final), ["ntp", "sftmix"], tmp_path / "fig.png")
    assert path == str(tmp_path / "fig.png")
    height, width, _ = matplotlib.image.imread(path).shape
    assert (width, height) == (15 * 120, 7 * 120)  # three 5-inch columns (NLL above, minus ntp below) at 120 dpi


def test_the_sweep_steps_past_the_edge_of_its_grid():
    study = _study()
    grid = [3e-4, 1e-3, 3e-3]
    assert study.next_lr(grid, 3e-3) == 1e-2 and study.next_lr(grid, 3e-4) == 1e-4  # one half-decade step
    assert study.next_lr(grid, 1e-3) is None  # inside the grid: done
    assert study.next_lr([*grid, 1e-2], 1e-2) == 3e-2 and study.next_lr([1e-4, 1e-3], 1e-3) == 1e-2
    assert study.next_lr([1e-3], 1e-3) is None
