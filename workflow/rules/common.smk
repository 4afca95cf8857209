# Shared helpers of the rule files: output locations and shell fragments.

ENV = "../../envs/volinr.yaml"
DEVICE_ARGS = f"--device {config['device']} --threads {{threads}}"

wildcard_constraints:
    target="lr|hr",
    layers=r"\d+",
    seed=r"\d+",
    method="sr|lanczos|bicubic",


def fit_dir(target):
    return f"{R}/fits/{target}/L{{layers}}_s{{seed}}"


def all_metrics():
    """Every evaluate JSON the tables read."""
    runs = expand("{kind}/L{layers}_s{seed}", kind=["ours", "baseline"], layers=LAYERS, seed=SEEDS)
    return [f"{R}/metrics/{run}.json" for run in runs] + expand(
        f"{R}/metrics/reference/{{method}}.json", method=REFERENCE_METHODS
    )
