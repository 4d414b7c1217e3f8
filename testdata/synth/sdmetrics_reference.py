"""Reference scores for kiln's evaluation: SDMetrics' QualityReport on the
pairs listed in pairs.json, written to sdmetrics_golden.json.

    python testdata/synth/sdmetrics_reference.py   # from the repository root
Needs sdmetrics (0.32), pandas, pyarrow. Every table has fewer than 50,000
rows, so SDMetrics' random subsample of contingency pairs does not apply.
"""
import json
import math

import pandas as pd
import sdmetrics
from sdmetrics.reports.single_table import QualityReport
from sdmetrics.single_table.privacy.dcr_utils import calculate_dcr

BASE = "testdata/synth/"


def sdtype(series):
    if pd.api.types.is_bool_dtype(series):
        return "boolean"
    if pd.api.types.is_datetime64_any_dtype(series):
        return "datetime"
    if pd.api.types.is_numeric_dtype(series):
        return "numerical"
    return "categorical"


def number(v):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


golden = {"sdmetrics_version": sdmetrics.__version__, "pairs": {}}
for pair in json.load(open(BASE + "pairs.json")):
    real = pd.read_parquet(BASE + pair["real"])
    synthetic = pd.read_parquet(BASE + pair["synthetic"])
    columns = {c: {"sdtype": pair["types"].get(c, sdtype(real[c]))} for c in real.columns}
    report = QualityReport()
    report.generate(real, synthetic, {"columns": columns}, verbose=False)
    shapes = report.get_details("Column Shapes")
    trends = report.get_details("Column Pair Trends")
    props = report.get_properties().set_index("Property")["Score"]
    golden["pairs"][pair["name"]] = {
        "overall": number(report.get_score()),
        "column_shapes": number(props["Column Shapes"]),
        "column_pair_trends": number(props["Column Pair Trends"]),
        "columns": {r["Column"]: number(r["Score"]) for _, r in shapes.iterrows()},
        "pairs": {
            f'{r["Column 1"]}|{r["Column 2"]}': {
                "metric": r["Metric"],
                "score": number(r["Score"]),
                "meets_threshold": bool(r["Meets Threshold?"]) if not pd.isna(r["Meets Threshold?"]) else False,
            }
            for _, r in trends.iterrows()
        },
    }
    if pair.get("dcr"):
        # Every row of both tables: kiln's report with --privacy-rows above
        # the row count computes the same distances.
        dcr = calculate_dcr(synthetic, real, {"columns": columns})
        golden["pairs"][pair["name"]]["median_dcr_synthetic_to_real"] = float(dcr.median())
with open(BASE + "sdmetrics_golden.json", "w") as f:
    json.dump(golden, f, indent=1, sort_keys=True)
    f.write("\n")
