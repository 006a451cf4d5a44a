#!/usr/bin/env python3
"""Writes the evaluation reports the HTML report's tests render (python3, standard library only).

report.json: a report with every field evaluate writes, made from 120 synthetic test images of
four classes (one class name holds <, & and quotes, to show that the page escapes it) and the
predictions of a VLM, a teacher, a distillation head and EmoVLM-KD drawn with a fixed seed; the
metrics, the 95% bootstrap intervals (1000 resamples), the exact McNemar test and the
complementarity counts are computed from those predictions, so the figures agree with each other.
report_old.json: the fields of reports from before the bootstrap intervals, gains, oracle and
training curves, without a gate (no EmoVLM-KD), with a cache path that needs escaping.

Run: python3 tests/data/report/make_reports.py  (rewrites both files beside this script)
"""
import json
import math
import os
import random

LABELS = ["amusement", "anger", "contentment", 'fear <&> "dread"']
N, C, RESAMPLES, SEED = 120, len(LABELS), 1000, 0


def predictions(rng, truth, p_right):
    # right with probability p_right[class], else a uniformly drawn wrong class
    out = []
    for t in truth:
        out.append(t if rng.random() < p_right[t] else rng.choice([c for c in range(C) if c != t]))
    return out


def report_of(pred, truth, idx):
    conf = [[0] * C for _ in range(C)]
    for i in idx:
        if pred[i] >= 0:
            conf[truth[i]][pred[i]] += 1
    n = len(idx)
    right = sum(1 for i in idx if pred[i] == truth[i])
    support = [sum(conf[t]) + sum(1 for i in idx if truth[i] == t and pred[i] < 0) for t in range(C)]
    per = []
    for c in range(C):
        tp = conf[c][c]
        fp = sum(conf[t][c] for t in range(C)) - tp
        fn = support[c] - tp
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        per.append((rec, prec, f1, support[c]))
    present = [c for c in range(C) if support[c] or any(conf[t][c] for t in range(C))]
    macro = sum(per[c][2] for c in present) / len(present)
    weighted = sum(per[c][2] * support[c] for c in range(C)) / n
    return {"n": n, "accuracy": right / n, "macro_f1": macro, "weighted_f1": weighted,
            "unparsable": sum(1 for i in idx if pred[i] < 0), "confusion": conf, "labels": LABELS,
            "per_class": {LABELS[c]: {"recall": per[c][0], "precision": per[c][1], "f1": per[c][2],
                                      "support": per[c][3]} for c in range(C)}}


def percentile_interval(values):
    v = sorted(values)
    lo = v[int(math.floor(0.025 * (len(v) - 1)))]
    hi = v[int(math.ceil(0.975 * (len(v) - 1)))]
    return [lo, hi]


def mcnemar_exact(b, c):
    n, k = b + c, min(b, c)
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)


def main():
    rng = random.Random(SEED)
    truth = [rng.randrange(C) for _ in range(N)]
    vlm = predictions(rng, truth, [0.75, 0.55, 0.7, 0.5])
    for i in rng.sample(range(N), 3):
        vlm[i] = -1  # unanswered
    teacher = predictions(rng, truth, [0.6, 0.75, 0.6, 0.7])
    head = predictions(rng, truth, [0.6, 0.7, 0.62, 0.68])
    # the gate takes the head's answer more often where the VLM is wrong than where it is right
    kd = [h if rng.random() < (0.6 if v != t else 0.1) else v for v, h, t in zip(vlm, head, truth)]
    kd = [p if p >= 0 else head[i] for i, p in enumerate(kd)]
    everyone = list(range(N))
    preds = {"vlm": vlm, "teacher": teacher, "distill_head": head, "emovlm_kd": kd}
    models = {k: report_of(p, truth, everyone) for k, p in preds.items()}
    models["vlm"]["parameters"] = 2208985600
    models["teacher"]["parameters"] = 86391556
    models["teacher"]["arch"] = "vit"
    models["distill_head"]["parameters"] = 2105348
    models["emovlm_kd"]["parameters"] = 2105388
    models["emovlm_kd"]["gate"] = "concat"
    models["emovlm_kd"]["gate_parameters"] = 40

    brng = random.Random(SEED)
    samples = {k: {"accuracy": [], "macro_f1": [], "f1": {l: [] for l in LABELS}} for k in preds}
    oracle_samples, diff_samples = [], {"vlm": [], "distill_head": []}
    for _ in range(RESAMPLES):
        idx = [brng.randrange(N) for _ in range(N)]
        for k, p in preds.items():
            r = report_of(p, truth, idx)
            samples[k]["accuracy"].append(r["accuracy"])
            samples[k]["macro_f1"].append(r["macro_f1"])
            for l in LABELS:
                samples[k]["f1"][l].append(r["per_class"][l]["f1"])
        oracle_samples.append(sum(1 for i in idx if vlm[i] == truth[i] or head[i] == truth[i]) / N)
        for k in diff_samples:
            diff_samples[k].append(sum((kd[i] == truth[i]) - (preds[k][i] == truth[i]) for i in idx) / N)
    for k in preds:
        s = samples[k]
        models[k]["interval"] = {"accuracy": percentile_interval(s["accuracy"]),
                                 "macro_f1": percentile_interval(s["macro_f1"]),
                                 "f1": {l: percentile_interval(s["f1"][l]) for l in LABELS}}

    def right(p, i):
        return p[i] == truth[i]

    gain = {}
    for k in ("vlm", "distill_head"):
        only_kd = sum(1 for i in everyone if right(kd, i) and not right(preds[k], i))
        only_in = sum(1 for i in everyone if right(preds[k], i) and not right(kd, i))
        gain[k] = {"difference": models["emovlm_kd"]["accuracy"] - models[k]["accuracy"],
                   "interval": percentile_interval(diff_samples[k]), "only_emovlm_kd_right": only_kd,
                   "only_%s_right" % k: only_in, "mcnemar_p": mcnemar_exact(only_kd, only_in)}

    def complementarity(a, b, an, bn):
        c = {"both_right": 0, "only_" + an: 0, "only_" + bn: 0, "both_wrong": 0}
        for i in everyone:
            ra, rb = right(a, i), right(b, i)
            key = "both_right" if ra and rb else "only_" + an if ra else "only_" + bn if rb else "both_wrong"
            c[key] += 1
        c["percent"] = {k: 100.0 * v / N for k, v in c.items()}
        return c

    crng = random.Random(SEED + 1)
    distill_curve, loss, acc = [], 1.9, 0.42
    for e in range(1, 9):
        loss *= 0.82 + 0.05 * crng.random()
        acc = min(0.8, acc + 0.06 * crng.random())
        distill_curve.append({"epoch": e, "step": 4 * e, "train_loss": loss,
                              "val_accuracy": None if e == 3 else acc})
    gate_curve, loss, acc = [], 1.1, 0.6
    for e in range(1, 6):
        loss *= 0.85 + 0.05 * crng.random()
        acc = min(0.85, acc + 0.03 * crng.random())
        gate_curve.append({"epoch": e, "step": 4 * e, "train_loss": loss, "val_accuracy": acc})

    report = {"cache": "runs/fi/cache-test", "labels": LABELS, "images": N, "vlm_mode": "classify",
              "models": models,
              "bootstrap": {"resamples": RESAMPLES, "seed": SEED, "level": 0.95},
              "oracle": {"accuracy": sum(1 for i in everyone if right(vlm, i) or right(head, i)) / N,
                         "interval": percentile_interval(oracle_samples)},
              "gain": gain,
              "complementarity": {"vlm_vs_teacher": complementarity(vlm, teacher, "vlm", "teacher"),
                                  "vlm_vs_head": complementarity(vlm, head, "vlm", "head")},
              "curves": {"distill": distill_curve, "gate": gate_curve},
              "gate_beats_inputs": models["emovlm_kd"]["accuracy"] > max(models["vlm"]["accuracy"],
                                                                         models["distill_head"]["accuracy"])}
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
        f.write("\n")

    old_models = {k: {f: v for f, v in models[k].items() if f != "interval"} for k in ("vlm", "teacher", "distill_head")}
    old_models["teacher"]["arch"] = "resnet50"
    old_models["vlm"]["parameters"] = None
    old = {"cache": "runs/old & <test>/cache", "labels": LABELS, "images": N, "vlm_mode": "classify",
           "models": old_models, "test_images_in_training": 3,
           "complementarity": report["complementarity"]}
    with open(os.path.join(here, "report_old.json"), "w") as f:
        json.dump(old, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
