"""The compatibility run (``make compat``): the tests against each Airflow minor line's lowest and highest
patch release, the lowest and newest Ray head, and KubeRay operators v1.4.0 and v1.5.0."""
