"""Regression guard on real music: a slice of the benchmark (5 s clips, clean and 5 dB SNR)."""
import csv
from pathlib import Path

import pytest

from tunescout.config import config_from_dict
from tunescout.engine import Engine

# Floors measured with the default parameters, minus a margin for noise.
MIN_ACCURACY = {"clean": 0.95, "noise5": 0.85}
MAX_FALSE_POSITIVE_RATE = 0.10


@pytest.fixture(scope="module")
def engine(queries, tmp_path_factory):
    config = config_from_dict({"data_dir": str(tmp_path_factory.mktemp("quality"))})
    engine = Engine.from_config(config)
    for line in (queries / "ingest.txt").read_text().split():
        with open(line, "rb") as f:
            engine.fingerprint(f, Path(line).stem)
    yield engine
    engine.close()


def test_accuracy_floor_and_false_positive_ceiling(engine, queries):
    hits: dict[str, list[bool]] = {}
    false_positives = []
    for row in csv.DictReader((queries / "ground_truth.csv").open()):
        body = engine.recognize((queries / row["query_file"]).read_bytes())
        top = body["results"][0] if body["results"] else None
        if row["is_negative"] == "1":
            false_positives.append(top is not None)
            continue
        correct = top is not None and top["song_name"] == row["track_id"]
        hits.setdefault(row["degradation"], []).append(correct)
    report = {d: sum(v) / len(v) for d, v in hits.items()}
    fp_rate = sum(false_positives) / len(false_positives)
    print("accuracy", report, "false positives", fp_rate)
    for degradation, floor in MIN_ACCURACY.items():
        assert report[degradation] >= floor, report
    assert fp_rate <= MAX_FALSE_POSITIVE_RATE
