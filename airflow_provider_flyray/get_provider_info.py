"""Provider metadata read by Airflow through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-provider-flyray",
        "name": "Flyray (Ray on KubeRay)",
        "description": "Run Ray jobs on transient KubeRay clusters, waiting in the triggerer; "
        "Flyte's Ray integration for Airflow.",
        "integrations": [
            {
                "integration-name": "Ray",
                "external-doc-url": "https://docs.ray.io/en/latest/cluster/running-applications/job-submission/",
                "tags": ["software"],
            }
        ],
        "operators": [
            {
                "integration-name": "Ray",
                "python-modules": [
                    "airflow_provider_flyray.operators.ray",
                    "airflow_provider_flyray.operators.ray_cluster",
                    "airflow_provider_flyray.operators.ray_pool",
                ],
            }
        ],
        "hooks": [{"integration-name": "Ray", "python-modules": ["airflow_provider_flyray.hooks.ray_cluster"]}],
        "triggers": [{"integration-name": "Ray", "python-modules": ["airflow_provider_flyray.triggers.ray_job"]}],
        "task-decorators": [{"name": "ray", "class-name": "airflow_provider_flyray.decorators.ray.ray_task"}],
        "extra-links": [
            "airflow_provider_flyray.links.ray.RayDashboardLink",
            "airflow_provider_flyray.links.ray.RayJobLink",
        ],
        "connection-types": [
            {
                "connection-type": "flyray",
                "hook-class-name": "airflow_provider_flyray.hooks.ray_cluster.RayClusterHook",
                "hook-name": "Ray (flyray: KubeRay or local)",
                "ui-field-behaviour": {
                    "hidden-fields": ["host", "schema", "login", "password", "port", "extra"],
                    "relabeling": {},
                },
                "conn-fields": {
                    "backend": {
                        "label": "Backend",
                        "schema": {
                            "type": ["string", "null"],
                            "enum": ["kubernetes", "local", None],
                            "default": "kubernetes",
                        },
                        "description": "kubernetes (KubeRay, default) or local (a Ray head on the worker)",
                    },
                    "namespace": {
                        "label": "Namespace",
                        "schema": {"type": ["string", "null"], "examples": ["default", "ray"]},
                    },
                    "in_cluster": {"label": "In cluster configuration", "schema": {"type": ["boolean", "null"]}},
                    "kube_config_path": {
                        "label": "Kube config path",
                        "schema": {
                            "type": ["string", "null"],
                            "examples": ["/opt/airflow/kubeconfig", "~/.kube/config"],
                        },
                    },
                    "kube_config": {
                        "label": "Kube config (JSON or YAML)",
                        "schema": {"type": ["string", "null"], "format": "password"},
                    },
                    "cluster_context": {"label": "Cluster context", "schema": {"type": ["string", "null"]}},
                    "disable_verify_ssl": {
                        "label": "Disable TLS verification of the Kubernetes API",
                        "schema": {"type": ["boolean", "null"]},
                    },
                    "dashboard_access": {
                        "label": "Dashboard access",
                        "schema": {
                            "type": ["string", "null"],
                            "enum": ["service", "proxy", "pod", "address", None],
                            "default": "service",
                        },
                        "description": "how Airflow reaches the Ray dashboard: service DNS, API-server proxy, "
                        "pod IP, or dashboard_address",
                    },
                    "dashboard_address": {
                        "label": "Dashboard address",
                        "schema": {"type": ["string", "null"], "examples": ["http://ray-head:8265"]},
                    },
                    "dashboard_url_template": {
                        "label": "Public dashboard URL template",
                        "schema": {
                            "type": ["string", "null"],
                            "examples": ["https://ray.example.com/{namespace}/{cluster}"],
                        },
                        "description": "for the UI links, e.g. https://ray.example.com/{namespace}/{cluster}",
                    },
                    "dashboard_token": {
                        "label": "Dashboard token",
                        "schema": {"type": ["string", "null"], "format": "password"},
                    },
                    "dashboard_token_secret": {
                        "label": "Secret holding the dashboard token (key auth_token)",
                        "schema": {"type": ["string", "null"], "examples": ["ray-token"]},
                    },
                    "verify_tls": {"label": "Verify dashboard TLS", "schema": {"type": ["boolean", "null"]}},
                    "kuberay_resource": {
                        "label": "KubeRay resource",
                        "schema": {
                            "type": ["string", "null"],
                            "enum": ["RayCluster", "RayJob", None],
                            "default": "RayCluster",
                        },
                        "description": "what a task creates by default: RayCluster (the provider deletes it) "
                        "or RayJob (KubeRay owns its lifecycle)",
                    },
                },
            }
        ],
        "config": {
            "flyray": {
                "description": "Defaults of airflow-provider-flyray's FlyteRayOperator.",
                "options": {
                    "poll_interval": {
                        "description": "Seconds between Ray job status checks (the log tail ends waits earlier).",
                        "version_added": "0.1.0",
                        "type": "float",
                        "example": "5",
                        "default": "5",
                    },
                    "startup_timeout": {
                        "description": "Seconds a Ray cluster may take to become ready.",
                        "version_added": "0.1.0",
                        "type": "float",
                        "example": "600",
                        "default": "600",
                    },
                    "min_deferral_seconds": {
                        "description": "Shortest time between a task deferring and its trigger's event: works "
                        "around Airflow 3.3 failing tasks whose trigger fires before the scheduler processed the "
                        "deferral (apache/airflow#72716). 0 turns it off.",
                        "version_added": "0.1.0",
                        "type": "float",
                        "example": "8",
                        "default": "8",
                    },
                },
            }
        },
    }
