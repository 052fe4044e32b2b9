"""Deployment of a new champion: sandbox smoke test, roll-out, post-deploy check, rollback.

:mod:`tasks.deploy.run` holds the steps the ``deploy`` DAG runs, :mod:`tasks.deploy.smoke` the smoke
test, :mod:`tasks.deploy.rollout` the two roll-out strategies (reload in embedded mode, Docker in
compose), :mod:`tasks.deploy.docker` the container operations of the second.
"""

from tasks.deploy.run import (
    NothingToDeploy,
    champion_version,
    deploy_model,
    post_check,
    roll_out,
    rollback,
    run_deploy,
    tune_champion,
    validate_in_sandbox,
)
from tasks.deploy.smoke import DeployError

__all__ = [
    "DeployError",
    "NothingToDeploy",
    "champion_version",
    "deploy_model",
    "post_check",
    "roll_out",
    "rollback",
    "run_deploy",
    "tune_champion",
    "validate_in_sandbox",
]
