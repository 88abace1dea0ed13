"""The Table 2 writer: every row, mean and spread over seeds, and the plot file."""

import json
from pathlib import Path

import pytest

from research.results import PLANS, markdown_table, plot, rows, summary


def fake_results(seeds=(0, 1)):
    names = [name for name, _ in rows(Path("w"))]
    per_row = {}
    for i, name in enumerate(names):
        per_row[name] = [{"total": 0.5 + 0.01 * i + 0.02 * s, "quality": 0.6, "semantic": 0.4 + 0.1 * s, "fd": 3.0 + s,
                          "sharpness": 0.9, "subject_consistency": 0.8, "motion_smoothness": 0.7, "flicker": 0.95}
                         for s in seeds]
    return {"num": 4, "seeds": list(seeds), "rows": per_row}


def test_rows_cover_teacher_ground_truth_and_both_students_at_every_plan():
    names = [name for name, _ in rows(Path("w"))]
    assert names[:4] == ["ground truth", "ground truth, VAE round trip", "teacher, 50 steps, CFG 3",
                         "teacher, 50 steps, CFG 2"]
    assert names[4:] == [f"{s} {p}" for s in ("ASD", "DMD only") for p in PLANS]
    args = dict(rows(Path("w")))
    assert args["teacher, 50 steps, CFG 3"][2:4] == ["--cfg-scale", "3"]
    assert args["teacher, 50 steps, CFG 2"][2:4] == ["--cfg-scale", "2"]
    assert args["DMD only 1*"][:4] == ["--checkpoint", str(Path("w") / "student_dmd_only.safetensors"), "--plan", "1*"]


def test_table_reports_mean_and_spread_over_seeds(tmp_path):
    results = fake_results()
    stats = summary(results)
    i = list(results["rows"]).index("ASD 1")
    assert stats["ASD 1"]["total"][0] == pytest.approx(0.5 + 0.01 * i + 0.01)  # seeds 0 and 1: +0.00, +0.02
    assert stats["ASD 1"]["semantic"] == pytest.approx((0.45, 0.05))
    table = markdown_table(results)
    assert table.count("\n") == 2 + len(results["rows"])
    assert "| DMD only 2* | " in table and "± 0.0500" in table
    plot(results, tmp_path / "results.png")
    assert (tmp_path / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_parts_merge_back_in_table_order_and_must_match(tmp_path):
    from research.results import merge

    full = fake_results()
    names = list(full["rows"])
    first = {"num": 4, "seeds": [0, 1], "rows": {n: full["rows"][n] for n in names[5:]}}
    second = {"num": 4, "seeds": [0, 1], "rows": {n: full["rows"][n] for n in names[:5]}}
    assert list(merge([first, second], Path("w"))["rows"]) == names
    with pytest.raises(SystemExit, match="missing"):
        merge([first], Path("w"))
    with pytest.raises(SystemExit, match="different --num"):
        merge([first, {**second, "num": 8}], Path("w"))


def test_a_part_with_a_new_seed_extends_every_row():
    from research.results import merge

    two = fake_results(seeds=(0, 1))
    third = fake_results(seeds=(2,))
    merged = merge([two, third], Path("w"))
    assert merged["seeds"] == [0, 1, 2]
    name = next(iter(merged["rows"]))
    assert merged["rows"][name] == two["rows"][name] + third["rows"][name]
    with pytest.raises(SystemExit, match="in two parts"):
        merge([two, two], Path("w"))
    partial = {**third, "rows": dict(list(third["rows"].items())[:3])}
    with pytest.raises(SystemExit, match="other seeds"):
        merge([two, partial], Path("w"))


# --- the targets of the built-in default, over training seeds ----------------------------------

def targets_cache(asd_one, asd_star, asd_two, dmd_one, dmd_two, teacher=(0.80, 0.81), vae=0.91):
    """A research.targets cache for two evaluation seeds (figures equal on both) and len(asd_one) pairs."""
    figures = {}

    def put(key, total, semantic=0.5):
        for seed in (3, 4):
            figures[f"{key}|{seed}"] = {"total": total, "quality": 0.5, "semantic": semantic, "fd": 1.0}

    put("vae", vae)
    put("teacher", *teacher)
    for i in range(len(asd_one)):
        put(f"asd{i}|1", asd_one[i])
        put(f"asd{i}|1*", asd_star[i])
        put(f"asd{i}|2", asd_two[i])
        put(f"dmd{i}|1", dmd_one[i])
        put(f"dmd{i}|1*", dmd_one[i])
        put(f"dmd{i}|2", dmd_two[i])
    return {"seeds": [3, 4], "num": 2, "training_seeds": [len(asd_one), len(dmd_one)], "figures": figures}


def test_targets_are_met_only_when_every_seed_says_so():
    from research.targets import assess

    met = {r["target"]: r["met"] for r in assess(targets_cache(
        asd_one=[0.70, 0.71, 0.72], asd_star=[0.77, 0.76, 0.78], asd_two=[0.81, 0.80, 0.82],
        dmd_one=[0.66, 0.67, 0.68], dmd_two=[0.78, 0.79, 0.77]))}
    assert all(met.values()), met
    # One DMD seed inside ASD's range at `2`, one seed where FFE loses, a teacher under 0.80 semantic:
    rows = assess(targets_cache(
        asd_one=[0.70, 0.71, 0.72], asd_star=[0.77, 0.70, 0.78], asd_two=[0.81, 0.80, 0.82],
        dmd_one=[0.66, 0.67, 0.68], dmd_two=[0.78, 0.805, 0.77], teacher=(0.80, 0.79), vae=0.899))
    met = {r["target"]: r["met"] for r in rows}
    assert [name for name, ok in met.items() if not ok] == [
        "VAE round trip total >= 0.90", "teacher total >= 0.80 and semantic >= 0.80",
        "ASD `1*` total >= 95% of the teacher's",  # mean 0.75 = 93.75% of 0.80
        "ASD above DMD only at `2`, beyond the training-seed spread", "ASD `1*` above `1`, in every training seed"]
    assert "-0.0100" in rows[-1]["measured"]  # the seed where FFE lost, by how much


def test_targets_cache_figures_and_resume_where_they_stopped(tmp_path, monkeypatch):
    import research.targets as targets

    calls = []

    def fake_evaluate(args):
        calls.append((args.checkpoint, args.plan, args.seed))
        return {"total": 0.5, "quality": 0.5, "semantic": 0.5, "fd": 1.0}

    monkeypatch.setattr(targets, "evaluate", fake_evaluate)
    weights = tmp_path / "w"
    weights.mkdir()
    runs = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.safetensors").write_bytes(b"")
        runs.append(str(tmp_path / name))
    out = tmp_path / "t.json"
    common = ["--weights", str(weights), "--asd", runs[0], "--dmd", runs[1], "--seeds", "3", "4", "--num", "2",
              "--out", str(out)]
    assert targets.main([*common, "--only", "asd"]) == 0
    assert len(calls) == 3 * 2 and all(c[0].endswith("a/model.safetensors") for c in calls)
    assert targets.main(common) == 0  # the ASD figures are not measured again
    assert len(calls) == 3 * 2 + (2 + 3) * 2
    with pytest.raises(SystemExit, match="no such file or run directory"):
        targets.main(["--weights", str(weights), "--asd", str(tmp_path / "c"), "--dmd", runs[1]])
    # A second training seed pair extends the same cache: only the new pair is measured, and the
    # targets are then judged over both pairs.
    more = ["--weights", str(weights), "--asd", runs[0], runs[0], "--dmd", runs[1], runs[1], "--seeds", "3", "4",
            "--num", "2", "--out", str(out)]
    assert targets.main(more) == 0
    assert len(calls) == 3 * 2 + (2 + 3) * 2 + (3 + 3) * 2
    assert json.loads(out.read_text())["training_seeds"] == [2, 2]


def test_the_docs_targets_table_says_what_its_recorded_figures_say():
    """docs/results.md's targets table is written by hand around docs/targets.json (the cache
    research.targets filled): every mean and every met/not-met it states must be the cache's."""
    from research.targets import assess

    docs = Path(__file__).resolve().parents[1] / "docs"
    cache = json.loads((docs / "targets.json").read_text())
    section = (docs / "results.md").read_text().split("## The targets")[1].split("\n## ")[0]
    assert cache["training_seeds"] == [3, 3] and cache["seeds"] == [3, 4, 5] and cache["num"] == 64
    rows = {r["target"]: r for r in assess(cache)}
    lines = {line.split(" | ")[0].lstrip("| "): line for line in section.splitlines() if line.startswith("| ")}

    def line_of(target):
        (match,) = [line for key, line in lines.items() if key.split(",")[0] == target.split(",")[0]]
        return match

    for target, row in rows.items():
        line = line_of(target)
        for figure in [word.strip("(;,") for word in row["measured"].split()
                       if word[:2] == "0." and len(word.strip("(;,")) == 6]:
            assert figure in line, (target, figure)
        verdict = line.rstrip(" |").rsplit(" | ", 1)[1]
        assert verdict.startswith("yes") == row["met"] or (not row["met"] and verdict.startswith("on seeds")), \
            (target, verdict)
