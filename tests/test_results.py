"""The Table 2 writer: every row, mean and spread over seeds, and the plot file."""

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
                         "teacher, 50 steps, CFG 1.5"]
    assert names[4:] == [f"{s} {p}" for s in ("ASD", "DMD only") for p in PLANS]
    args = dict(rows(Path("w")))
    assert args["teacher, 50 steps, CFG 3"][2:4] == ["--cfg-scale", "3"]
    assert args["teacher, 50 steps, CFG 1.5"][2:4] == ["--cfg-scale", "1.5"]
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
