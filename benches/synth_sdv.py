"""SDV's side of benches/synth.sh: one step per process, so that each step's
peak memory is its own.

    python benches/synth_sdv.py fit REAL_PARQUET MODEL_PKL
    python benches/synth_sdv.py sample MODEL_PKL ROWS OUT_PARQUET
    python benches/synth_sdv.py score REAL_PARQUET SYNTHETIC_PARQUET ROWS SEED
Prints the step's seconds (fit, sample) or the SDMetrics overall quality
score (score: ROWS rows of each table, drawn with SEED, so SDMetrics' own
50,000-row subsample of contingency pairs does not apply).
"""
import sys
import time
import warnings

warnings.filterwarnings("ignore")
import pandas as pd  # noqa: E402


def sdtype(series):
    if pd.api.types.is_bool_dtype(series):
        return "boolean"
    if pd.api.types.is_datetime64_any_dtype(series):
        return "datetime"
    if pd.api.types.is_numeric_dtype(series):
        return "numerical"
    return "categorical"


def metadata(real):
    columns = {c: {"sdtype": sdtype(real[c])} for c in real.columns}
    columns["sample_id"] = {"sdtype": "id"}
    return columns


step = sys.argv[1]
if step == "fit":
    from sdv.metadata import Metadata
    from sdv.single_table import GaussianCopulaSynthesizer

    real = pd.read_parquet(sys.argv[2])
    md = Metadata.load_from_dict({"tables": {"t": {"columns": metadata(real), "primary_key": "sample_id"}}})
    t = time.time()
    synthesizer = GaussianCopulaSynthesizer(md)
    synthesizer.fit({"t": real})
    print(f"{time.time() - t:.3f}")
    synthesizer.save(sys.argv[3])
elif step == "sample":
    from sdv.utils import load_synthesizer

    synthesizer = load_synthesizer(sys.argv[2])
    t = time.time()
    out = synthesizer.sample(int(sys.argv[3]))
    print(f"{time.time() - t:.3f}")
    if isinstance(out, dict):
        out = next(iter(out.values()))
    out.to_parquet(sys.argv[4], index=False)
elif step == "score":
    from sdmetrics.reports.single_table import QualityReport

    real = pd.read_parquet(sys.argv[2])
    synthetic = pd.read_parquet(sys.argv[3])
    n, seed = int(sys.argv[4]), int(sys.argv[5])
    real = real.sample(min(n, len(real)), random_state=seed)
    synthetic = synthetic.sample(min(n, len(synthetic)), random_state=seed)
    report = QualityReport()
    report.generate(real, synthetic[real.columns], {"columns": metadata(real)}, verbose=False)
    print(f"{report.get_score():.4f}")
else:
    sys.exit(f"unknown step {step}")
