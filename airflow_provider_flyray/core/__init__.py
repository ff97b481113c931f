"""The one implementation of every Kubernetes and Ray dashboard call: async, one transport each.

- :mod:`.session`: :class:`~airflow_provider_flyray.core.session.RaySession`, one connection's settings,
  Kubernetes client and HTTP session;
- :mod:`.kube`: RayClusters, pods, events, Secrets and watches through ``kubernetes_asyncio``;
- :mod:`.dashboard`: the Ray Jobs API (requests from :mod:`~airflow_provider_flyray.jobs_api`) over aiohttp;
- :mod:`.errors`: TLS, RBAC and retry policy shared by both;
- :mod:`.portal`: runs these coroutines for synchronous callers (the worker), inside a running loop too.
"""
