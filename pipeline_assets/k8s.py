"""LLMDAG_LAUNCHER=k8s: every Dagster step a Kubernetes job (dagster-k8s's ``k8s_job_executor``).

The job image is the code location's own (Dagster's k8s run launcher passes ``DAGSTER_CURRENT_IMAGE``;
set ``job_image`` in the run config to override it). Every pod mounts the artifact root from one
ReadWriteMany PersistentVolumeClaim at the same path, so a step reads what the previous pod wrote; training
steps request GPUs when the profile trains on CUDA; curation runs inside its pod on datatrove's local
executor. No cluster exists here: tests validate this config against dagster-k8s's own schema.
"""

from __future__ import annotations

import dagster as dg

from pipeline_assets.pools import TRAINING_POOL

ARTIFACT_CLAIM = "llmdag-home"  # the PVC a site creates for $LLMDAG_HOME (ReadWriteMany)
# What every step pod asks for; a training step on a GPU profile adds its GPUs (per_step_k8s_config).
STEP_RESOURCES = {"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"memory": "16Gi"}}
TRAINING_RESOURCES = {"requests": {"cpu": "8", "memory": "64Gi"}, "limits": {"memory": "120Gi"}}
# The environment a step must share with the process that launched it.
PASSED_ENV = ["LLMDAG_PROFILE", "LLMDAG_HOME", "LLMDAG_LAUNCHER", "LLMDAG_LANDING", "LLMDAG_BUILTIN_SOURCES",
              "HF_HUB_OFFLINE=1", "HF_HUB_DISABLE_TELEMETRY=1"]


def training_steps(assets: list) -> list[str]:
    """Step keys of the assets in the training pool (one op per asset here: the op name is the step key)."""
    return sorted({a.op.name for a in assets if isinstance(a, dg.AssetsDefinition) and a.op.pool == TRAINING_POOL})


def k8s_executor_config(root: str, training: list[str], gpus_per_training_step: int) -> dict:
    """The ``k8s_job_executor`` config: shared artifact volume, env, per-step resources and GPUs."""
    training_limits = {**TRAINING_RESOURCES["limits"],
                       **({"nvidia.com/gpu": str(gpus_per_training_step)} if gpus_per_training_step else {})}
    return {
        "job_namespace": "dagster",
        "max_concurrent": 8,
        "image_pull_policy": "IfNotPresent",
        "env_vars": PASSED_ENV,
        "volumes": [{"name": "llmdag-home", "persistent_volume_claim": {"claim_name": ARTIFACT_CLAIM}}],
        "volume_mounts": [{"name": "llmdag-home", "mount_path": root}],
        "step_k8s_config": {"container_config": {"resources": STEP_RESOURCES}},
        "per_step_k8s_config": {step: {"container_config": {"resources": {**TRAINING_RESOURCES,
                                                                           "limits": training_limits}}}
                                for step in training},
    }


def k8s_executor(root: str, training: list[str], gpus_per_training_step: int) -> dg.ExecutorDefinition:
    try:
        from dagster_k8s import k8s_job_executor
    except ImportError as e:
        raise ImportError("LLMDAG_LAUNCHER=k8s runs each step as a k8s job: pip install -e '.[scale]'") from e
    return k8s_job_executor.configured(k8s_executor_config(root, training, gpus_per_training_step),
                                       name="k8s_job_executor")
