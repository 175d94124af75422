#!/usr/bin/env bash
# GPU checks of lv-forecast, in two parts.
#
#   benchmarks/gpu_check.sh [engine] [ARGS]      LoRA step tokens/s and MFU (executed FLOPs, GQA as
#                                                run, against the measured and the spec-sheet peak),
#                                                batched forecasting against naive, memory, compile
#                                                counts, NVML; needs torch/transformers/peft only (no
#                                                mlflow, no network). ARGS go to
#                                                benchmarks/gpu_check.py (--help); e.g. --compile
#                                                both: the step eager and under torch.compile.
#   benchmarks/gpu_check.sh pipeline [-P k=v ...]
#                                                the whole coursework pipeline in a fresh MLflow
#                                                experiment (mlflow run . -e pipeline --env-manager
#                                                local -P preset=qwen ...), then wall time per phase,
#                                                the budget used and the accuracy table
#                                                (benchmarks/pipeline_report.py). Needs mlflow and the
#                                                base model (hub access, or -P base_model=DIR|FILE.gguf).
#
# Environment: PYTHON (default python3), MLFLOW_TRACKING_URI (default sqlite:///mlflow.db in the
# repository), EXPERIMENT (default gpu-check-<date>-<time>: a fresh experiment, so the budget
# starts at 0), PRESET (default qwen; or pass -P preset=NAME), OUT (a folder: JSON summaries go
# there). Target on one H200-class GPU: the qwen pipeline in at most 20 minutes.
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$(command -v python3 || command -v python)}

usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
}

part=engine
if [[ $# -gt 0 && ("$1" != -* || "$1" == -h || "$1" == --help) ]]; then
    part=$1
    shift
fi

case "$part" in
engine)
    exec "$PYTHON" benchmarks/gpu_check.py "$@"
    ;;
pipeline)
    if ! "$PYTHON" -c "import mlflow" 2>/dev/null; then
        echo "gpu_check.sh pipeline: mlflow is not importable by $PYTHON. Install the project's" \
            "requirements first: pip install -r requirements.txt (mlflow==3.17.2, torch," \
            "transformers, peft and the three packages); the engine part needs no mlflow." >&2
        exit 2
    fi
    if ! command -v mlflow >/dev/null; then
        echo "gpu_check.sh pipeline: no \`mlflow\` command on PATH (activate the venv that has" \
            "mlflow installed)." >&2
        exit 2
    fi
    export MLFLOW_TRACKING_URI=${MLFLOW_TRACKING_URI:-sqlite:///mlflow.db}
    export MLFLOW_DISABLE_TELEMETRY=${MLFLOW_DISABLE_TELEMETRY:-true}
    export TOKENIZERS_PARALLELISM=${TOKENIZERS_PARALLELISM:-false}
    experiment=${EXPERIMENT:-gpu-check-$(date +%Y%m%d-%H%M%S)}
    params=()
    has_preset=0
    for arg in "$@"; do
        [[ "$arg" == preset=* ]] && has_preset=1
    done
    [[ $has_preset == 1 ]] || params+=(-P "preset=${PRESET:-qwen}")
    echo "gpu_check.sh pipeline: experiment '$experiment' at $MLFLOW_TRACKING_URI" >&2
    echo "+ mlflow run . -e pipeline --env-manager local --experiment-name $experiment ${params[*]} $*" >&2
    start=$(date +%s)
    rc=0
    mlflow run . -e pipeline --env-manager local --experiment-name "$experiment" \
        "${params[@]}" "$@" || rc=$?
    end=$(date +%s)
    echo "gpu_check.sh pipeline: mlflow run exited $rc after $((end - start)) s" >&2
    report=(--experiment-name "$experiment" --tracking-uri "$MLFLOW_TRACKING_URI"
        --wall-seconds "$((end - start))")
    [[ -n "${OUT:-}" ]] && report+=(--json "$OUT/pipeline_report.json")
    "$PYTHON" benchmarks/pipeline_report.py "${report[@]}" || { r=$?; [[ $rc != 0 ]] || rc=$r; }
    exit "$rc"
    ;;
-h | --help | help)
    usage
    echo
    echo "engine options (benchmarks/gpu_check.py --help for details):"
    "$PYTHON" benchmarks/gpu_check.py --help | sed -n '/^options:/,$p'
    ;;
*)
    echo "gpu_check.sh: unknown part '$part' (engine or pipeline; --help)" >&2
    exit 2
    ;;
esac
