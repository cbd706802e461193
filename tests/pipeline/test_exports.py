"""The public face of grafos_pipeline: every exported name imports, nothing private leaks."""

from __future__ import annotations

import importlib

import grafos_pipeline


def test_every_name_in_all_is_importable() -> None:
    module = importlib.import_module("grafos_pipeline")
    for name in grafos_pipeline.__all__:
        assert getattr(module, name) is not None, name


def test_all_holds_no_private_names_and_no_duplicates() -> None:
    assert all(not name.startswith("_") for name in grafos_pipeline.__all__)
    assert len(set(grafos_pipeline.__all__)) == len(grafos_pipeline.__all__)


def test_public_classes_claim_the_package_as_home() -> None:
    # Users import from the package; reprs and docs should not point at _modules.
    for name in grafos_pipeline.__all__:
        obj = getattr(grafos_pipeline, name)
        module = getattr(obj, "__module__", "")
        assert module.startswith("grafos_pipeline"), (name, module)


def test_the_issue_names_are_exported() -> None:
    expected = {
        "CheckpointFlushObserver",
        "Stage",
        "Pipeline",
        "Checkpoint",
        "CheckpointStore",
        "MemoryCheckpointStore",
        "DirectoryCheckpointStore",
        "CheckpointError",
        "StaleFencingToken",
        "CorruptCheckpoint",
        "InvalidLeaseId",
    }
    assert expected <= set(grafos_pipeline.__all__)
    assert issubclass(grafos_pipeline.StaleFencingToken, grafos_pipeline.CheckpointError)
    assert issubclass(grafos_pipeline.CorruptCheckpoint, grafos_pipeline.CheckpointError)
    assert issubclass(grafos_pipeline.InvalidLeaseId, ValueError)


def test_the_sink_names_are_exported() -> None:
    expected = {
        "Sink",
        "DirectorySink",
        "SqliteSink",
        "InvalidRecord",
        "InvalidSink",
        "CorruptOutput",
        "OutputNotPublished",
    }
    assert expected <= set(grafos_pipeline.__all__)
    for name in ("InvalidRecord", "CorruptOutput", "OutputNotPublished", "InvalidSink"):
        assert issubclass(getattr(grafos_pipeline, name), grafos_pipeline.CheckpointError)
