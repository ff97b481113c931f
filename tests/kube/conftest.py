# The `kube_control_plane` session fixture comes from tests/conftest.py (tests.kube.fixtures).
