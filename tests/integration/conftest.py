import pytest


@pytest.fixture(scope="session")
def embedded_endpoint(smollm2_dir, tmp_path_factory):
    """A real `transformers serve` on the embedded model, shared by the integration tests."""
    from seekhelp.backends.server import serve

    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with serve("smollm2-135m", log_path=log) as srv:
        yield srv


@pytest.fixture(scope="session")
def embedded_slm(smollm2_dir):
    from seekhelp.backends.local import TransformersBackend

    return TransformersBackend("smollm2-135m")
