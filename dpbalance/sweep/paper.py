"""Published figures the reproduction is compared with (reference/balanceroute.md §3.1, §5; bfio.md; SPEC §8).

Numbers are copied from the papers' tables as digested in ``reference/``; nothing here is computed.
"""

from __future__ import annotations

#: BalanceRoute main table, G = 8, heavy load: (avg max–min imbalance, TPOT P95 ms, throughput tok/s)
BR_MAIN = {
    "Azure-2024 conv (>1000)": {
        "random": (146_564, 90.3, 706),
        "round_robin": (110_049, 89.1, 771),
        "p2c": (109_033, 89.3, 794),
        "jsq": (104_737, 89.3, 785),
        "br0": (54_051, 83.3, 854),
        "brh-oracle": (35_301, 77.3, 957),
        "brh-survival": (44_010, 82.1, 893),
        "brh-exact_match": (38_496, 82.3, 909),
    },
    "Proprietary": {
        "random": (438_225, 85.2, 811),
        "round_robin": (254_798, 83.2, 847),
        "p2c": (262_940, 84.0, 836),
        "jsq": (215_110, 83.2, 843),
        "br0": (51_927, 79.3, 943),
        "brh-oracle": (23_577, 78.0, 1_029),
        "brh-survival": (40_757, 78.7, 979),
        "brh-exact_match": (36_277, 78.8, 977),
    },
}

#: BalanceRoute scaling (Proprietary trace): G -> (strongest baseline, BR-0, BR-H oracle) throughput tok/s
BR_SCALING = {4: (366.4, 407.1, 415.3), 8: (846.7, 942.5, 1_028.9), 16: (927.3, 1_117.8, 1_247.4)}

#: BR-H (β, γ) sensitivity, Proprietary, G = 8, oracle, H = 80
BR_SENSITIVITY = {"throughput": (945.0, 1_043.0), "tpot_p95_ms": (77.3, 79.5), "best_baseline": 847.0}

#: offline predictor accuracy: (dataset, predictor) -> (finish-within-H AUC, conditional remaining MAE in steps)
BR_PREDICTORS = {
    ("Azure-2024", "survival"): (0.993, 5.4),
    ("Azure-2024", "exact_match"): (0.995, 5.4),
    ("Proprietary", "survival"): (0.700, 20.1),
    ("Proprietary", "exact_match"): (0.974, 2.9),
}

#: BR-H router overhead at G = 8 (ms): DeepSeek-V3 and Qwen3-30B-A3B deployments
BR_OVERHEAD_MS = {"p50": (1.03, 1.20), "p99": (2.52, 2.77)}

#: BF-IO paper claims
BFIO_IDLE_FCFS = 0.40  # > 40 % of decode compute idle at the barrier under FCFS (production traces)
BFIO_ENERGY_SAVING = 0.28  # 28 % energy reduction in experiments
BFIO_FLEET_SAVING = 0.52  # > 52 % projected at fleet scale

#: SPEC §8 anchors on mooncake-conversation (10,000 requests, saturated, visible 32, G = 8, B = 72, steady window)
ANCHORS = {
    "jsq_tokens": (405_672, 4_710),
    "bfio_h0_authors": (15_784, 5_758),
    "bfio_h80_authors": (58_839, 5_711),
    "br0_maxmin_max": 16_000,
    "br0_gain_min": 0.21,
}
