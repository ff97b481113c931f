"""Local code as Ray packages (airflow_provider_flyray/packaging.py), checked against Ray's own client.

The oracle is the ``ray`` wheel the tests install (never needed on Airflow): its
``upload_working_dir_if_needed`` / ``upload_py_modules_if_needed`` name packages the way
``ray job submit`` does, so a package either side uploads is the other's too. Uploads are not done
here (``upload_fn`` does nothing); tests/integration/test_shipping_local.py ships to a real head.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path
from typing import Any

import pytest
from ray._private.runtime_env.packaging import create_package, get_uri_for_package
from ray._private.runtime_env.py_modules import upload_py_modules_if_needed
from ray._private.runtime_env.working_dir import upload_working_dir_if_needed

from airflow_provider_flyray import packaging
from airflow_provider_flyray.errors import ConfigError
from airflow_provider_flyray.packaging import LocalPackage, local_packages, write_zip


def ray_names(runtime_env: dict[str, Any]) -> dict[str, Any]:
    """What Ray 2.60's client puts in the runtime_env for these local paths (nothing uploaded)."""
    env = upload_working_dir_if_needed(dict(runtime_env), include_gitignore=True, upload_fn=lambda *a, **k: None)
    return upload_py_modules_if_needed(env, include_gitignore=True, upload_fn=lambda *a, **k: None)


def tree(root: Path, files: dict[str, str | bytes]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A working_dir with what real ones have: ignore files, caches, data, nested packages, an empty dir."""
    root = tree(
        tmp_path / "project",
        {
            "main.py": "import helpers\nprint(helpers.VALUE)\n",
            "helpers/__init__.py": "VALUE = 42\n",
            "helpers/deep/more.py": "X = 1\n",
            "helpers/__pycache__/x.cpython-311.pyc": b"\x00compiled",
            ".gitignore": "*.log\nbuild/\n",
            "run.log": "ignored by .gitignore\n",
            "build/out.bin": b"\x01" * 100,
            "data/big.csv": "a,b\n" * 1000,
            "sub/.gitignore": "secret.txt\n",
            "sub/secret.txt": "ignored by the nested .gitignore\n",
            "sub/kept.txt": "kept\n",
            ".git/HEAD": "ref: refs/heads/main\n",
        },
    )
    (root / "empty").mkdir()
    return root


def test_working_dir_is_named_exactly_as_rays_client_names_it(project):
    env = {"working_dir": str(project)}
    ours, packages = local_packages(env, None)
    assert ours is not None and ours["working_dir"] == ray_names(env)["working_dir"]
    assert [p.field for p in packages] == ["runtime_env.working_dir"]
    assert packages[0].uri.startswith("gcs://_ray_pkg_") and len(packages[0].name) == len("_ray_pkg_") + 16 + 4


def test_excludes_change_the_name_as_they_change_rays(project):
    env = {"working_dir": str(project), "excludes": ["data/", "*.txt"]}
    ours, _ = local_packages(env, None)
    assert ours is not None and ours["working_dir"] == ray_names(env)["working_dir"]
    plain, _ = local_packages({"working_dir": str(project)}, None)
    assert plain is not None and plain["working_dir"] != ours["working_dir"]


def test_py_modules_of_every_kind_are_named_as_ray_names_them(tmp_path, project):
    module_file = tree(tmp_path, {"single.py": "Y = 2\n"}) / "single.py"
    archive = tmp_path / "ready.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("ready/__init__.py", "Z = 3\n")
    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    wheel.write_bytes(archive.read_bytes())
    env = {"py_modules": [str(project / "helpers"), str(module_file), str(archive), str(wheel), "s3://bucket/x.zip"]}
    ours, packages = local_packages(env, None)
    assert ours is not None
    # Ray 2.60's client refuses a local .zip in py_modules (its cluster takes a zip's gcs:// URI):
    # that one is named as Ray names a ready package (get_uri_for_package: the sha1 of its bytes).
    without_zip = {"py_modules": [m for m in env["py_modules"] if m != str(archive)]}
    expected = ray_names(without_zip)["py_modules"]
    expected.insert(2, get_uri_for_package(archive))
    assert ours["py_modules"] == expected
    assert ours["py_modules"][4] == "s3://bucket/x.zip"  # a remote URI passes through
    assert [p.field for p in packages] == [f"runtime_env.py_modules[{i}]" for i in range(4)]


def test_relative_paths_are_relative_to_the_dag_folder(project):
    ours, packages = local_packages({"working_dir": "project"}, str(project.parent))
    absolute, _ = local_packages({"working_dir": str(project)}, None)
    assert ours == absolute and packages[0].path == str(project)


def test_remote_and_absent_paths_are_left_alone():
    env = {"working_dir": "s3://bucket/code.zip", "pip": ["numpy"]}
    assert local_packages(env, None) == (env, [])
    assert local_packages(None, None) == (None, [])


def names_in(data: bytes) -> set[str]:
    return set(zipfile.ZipFile(io.BytesIO(data)).namelist())


def our_zip(package: LocalPackage) -> bytes:
    out = io.BytesIO()
    write_zip(package, out)
    return out.getvalue()


@pytest.mark.parametrize("which", ["working_dir", "module"])
def test_the_zip_holds_what_rays_zip_holds_and_is_the_same_every_time(tmp_path, project, which):
    if which == "working_dir":
        env: dict[str, Any] = {"working_dir": str(project)}
        path, parent, excludes = project, False, [".git", ".venv", "venv", "__pycache__"]
    else:
        env, path, parent, excludes = {"py_modules": [str(project / "helpers")]}, project / "helpers", True, []
    _, (package,) = local_packages(env, None)
    ray_zip = tmp_path / "ray.zip"
    create_package(str(path), ray_zip, include_gitignore=True, include_parent_dir=parent, excludes=excludes)
    first = our_zip(package)
    assert names_in(first) == names_in(ray_zip.read_bytes())
    assert our_zip(package) == first  # deterministic: fixed order, timestamps and modes
    assert len(first) <= package.size  # the size checked before upload is an upper bound


def test_the_default_excludes_and_ignore_files_keep_things_out(project):
    _, (package,) = local_packages({"working_dir": str(project)}, None)
    names = names_in(our_zip(package))
    assert {"main.py", "helpers/__init__.py", "helpers/deep/more.py", "sub/kept.txt", "empty/"} <= names
    for left_out in (
        "run.log",
        "build/out.bin",
        "sub/secret.txt",
        ".git/HEAD",
        "helpers/__pycache__/x.cpython-311.pyc",
    ):
        assert left_out not in names


def test_a_tree_changed_after_hashing_is_refused(project):
    _, (package,) = local_packages({"working_dir": str(project)}, None)
    (project / "main.py").write_text("print('changed')\n")
    with pytest.raises(packaging.PackageChanged):
        our_zip(package)


def field_error(env: dict[str, Any], base: str | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        local_packages(env, base)
    return caught.value


def test_a_missing_path_names_the_field_and_where_it_looked(tmp_path):
    error = field_error({"py_modules": ["s3://ok/x.zip", "nowhere"]}, str(tmp_path))
    assert error.field == "runtime_env.py_modules[1]"
    assert "does not exist on the Airflow worker" in str(error) and str(tmp_path) in str(error)


def test_a_symlink_leaving_the_tree_is_refused(tmp_path, project):
    outside = tree(tmp_path / "elsewhere", {"credentials": "not yours"})
    os.symlink(outside / "credentials", project / "creds")
    error = field_error({"working_dir": str(project)})
    assert error.field == "runtime_env.working_dir"
    assert "outside" in str(error) and "excludes" in str(error)
    # Excluding the link is the fix the message names.
    ours, _ = local_packages({"working_dir": str(project), "excludes": ["creds"]}, None)
    assert ours is not None


def test_a_symlink_inside_the_tree_is_followed_as_ray_follows_it(project):
    os.symlink(project / "helpers" / "__init__.py", project / "alias.py")
    env = {"working_dir": str(project)}
    ours, (package,) = local_packages(env, None)
    assert ours is not None and ours["working_dir"] == ray_names(env)["working_dir"]
    assert "alias.py" in names_in(our_zip(package))


def test_a_package_over_the_dashboards_limit_is_refused_before_upload(tmp_path, project):
    big = tmp_path / "big.zip"
    with big.open("wb") as handle:  # sparse: no 100 MiB written
        handle.truncate(packaging.MAX_PACKAGE_BYTES + 1)
    error = field_error({"py_modules": [str(big)]})
    assert error.field == "runtime_env.py_modules[0]"
    assert "100.0 MiB" in str(error) and "excludes" in str(error)


def test_a_wrong_kind_of_file_is_refused(tmp_path):
    notes = tree(tmp_path, {"notes.txt": "x"}) / "notes.txt"
    assert "a directory or a .zip file" in str(field_error({"working_dir": str(notes)}))
    assert ".py, .zip or .whl" in str(field_error({"py_modules": [str(notes)]}))


def test_packages_cross_as_plain_data(project):
    _, (package,) = local_packages({"working_dir": str(project)}, None)
    assert LocalPackage.from_dict(package.to_dict()) == package
    assert package.uploaded().uploads == 1
