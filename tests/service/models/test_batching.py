"""service.models.batching: combined calls, exact per-request results, isolation,
timeouts, drain."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from service.app import create_app
from service.errors import InferenceFailed, InferenceTimeout, ServiceUnavailable
from service.models.batching import BatchingConfig, DynamicBatcher, config_for
from service.settings import Settings, SettingsError


class Recorder:
    """A fake model: logits = 10 * inputs; remembers every call's batch size."""

    def __init__(self, delay: float = 0.0, poison: float | None = None) -> None:
        self.sizes: list[int] = []
        self.delay, self.poison = delay, poison
        self.lock = threading.Lock()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        with self.lock:
            self.sizes.append(batch.shape[0])
        if self.delay:
            time.sleep(self.delay)
        if self.poison is not None and (batch == self.poison).any():
            raise RuntimeError("onnxruntime exploded")
        return batch * 10.0


def _batcher(run, **config) -> DynamicBatcher:
    return DynamicBatcher("m", 1, run, BatchingConfig(**config))


def test_concurrent_requests_are_combined_and_each_gets_its_own_rows():
    run = Recorder(delay=0.002)
    batcher = _batcher(run, max_batch_size=16, max_delay_us=20_000)
    inputs = [np.full((1 + i % 3, 2), float(i)) for i in range(40)]
    with ThreadPoolExecutor(16) as pool:
        outputs = list(pool.map(batcher.predict, inputs))
    batcher.close()
    for x, y in zip(inputs, outputs, strict=True):
        np.testing.assert_array_equal(y, x * 10.0)
    assert sum(run.sizes) == sum(len(x) for x in inputs)
    assert len(run.sizes) < len(inputs)  # requests really were merged
    assert max(run.sizes) <= 16


def test_a_failing_request_does_not_fail_the_others_in_its_batch():
    run = Recorder(poison=-1.0)
    batcher = _batcher(run, max_batch_size=64, max_delay_us=50_000)
    inputs = [np.full((1, 2), float(i)) for i in range(8)]
    inputs[3] = np.full((1, 2), -1.0)

    def one(x):
        try:
            return batcher.predict(x)
        except InferenceFailed as exc:
            return exc

    with ThreadPoolExecutor(8) as pool:
        outputs = list(pool.map(one, inputs))
    batcher.close()
    assert isinstance(outputs[3], InferenceFailed)
    for i, (x, y) in enumerate(zip(inputs, outputs, strict=True)):
        if i != 3:
            np.testing.assert_array_equal(y, x * 10.0)


def test_a_waiting_request_gives_up_at_its_timeout_and_the_queue_moves_on():
    run = Recorder(delay=0.5)
    batcher = _batcher(run, max_batch_size=8, max_delay_us=0, timeout_s=0.1)
    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(batcher.predict, np.ones((1, 2)))  # leads: a 0.5 s call
        time.sleep(0.05)
        started = time.perf_counter()
        with pytest.raises(InferenceTimeout, match=r"did not answer within 0\.1 s"):
            batcher.predict(np.zeros((1, 2)))  # queued behind it, gives up
        assert time.perf_counter() - started < 0.4
        np.testing.assert_array_equal(first.result(timeout=5), np.full((1, 2), 10.0))
    # The abandoned request was skipped, not promoted: the batcher still serves.
    np.testing.assert_array_equal(batcher.predict(np.ones((1, 2))), np.full((1, 2), 10.0))
    assert run.sizes == [1, 1]
    batcher.close()


def test_a_lone_request_runs_in_its_own_thread_at_once():
    calls = []
    batcher = _batcher(lambda b: calls.append(threading.current_thread()) or b, max_delay_us=0)
    batcher.predict(np.ones((1, 2)))
    assert calls == [threading.current_thread()]  # no hand-off to another thread


def test_close_drains_the_queue_then_refuses_new_work():
    run = Recorder(delay=0.05)
    batcher = _batcher(run, max_batch_size=2, max_delay_us=0)
    inputs = [np.full((1, 2), float(i)) for i in range(6)]
    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(batcher.predict, x) for x in inputs]
        time.sleep(0.02)  # all queued, the first call running
        batcher.close()
        outputs = [f.result(timeout=5) for f in futures]
    for x, y in zip(inputs, outputs, strict=True):
        np.testing.assert_array_equal(y, x * 10.0)
    with pytest.raises(ServiceUnavailable, match="shutting down"):
        batcher.predict(np.zeros((1, 2)))


def test_a_full_batch_runs_alone_without_waiting():
    run = Recorder()
    batcher = _batcher(run, max_batch_size=4, max_delay_us=1_000_000)
    started = time.perf_counter()
    np.testing.assert_array_equal(batcher.predict(np.ones((5, 2))), np.full((5, 2), 10.0))
    assert time.perf_counter() - started < 0.5  # did not wait for the 1 s window
    assert run.sizes == [5]
    batcher.close()


def test_a_lone_request_waits_at_most_the_delay():
    batcher = _batcher(Recorder(), max_batch_size=64, max_delay_us=100_000)
    started = time.perf_counter()
    batcher.predict(np.ones((1, 2)))
    elapsed = time.perf_counter() - started
    assert 0.09 <= elapsed < 0.5
    batcher.close()


def test_overrides_parse_and_apply():
    from dataclasses import fields

    from service.settings import model_overrides

    def parse(text):
        allowed = (f.name for f in fields(BatchingConfig))
        return model_overrides("SERVING_BATCHING_OVERRIDES", text, allowed)

    overrides = parse(
        '{"fashion-mnist": {"max_batch_size": 64, "max_delay_us": 2000},'
        ' "circles": {"enabled": false}}'
    )
    base = BatchingConfig()
    assert config_for(base, overrides, "fashion-mnist").max_batch_size == 64
    assert config_for(base, overrides, "circles").enabled is False
    assert config_for(base, overrides, "blobs") == base
    assert parse("") == {}
    with pytest.raises(SettingsError, match=r"unknown option\(s\) for circles: \['max_size'\]"):
        parse('{"circles": {"max_size": 3}}')
    with pytest.raises(SettingsError, match="SERVING_BATCHING_OVERRIDES is not JSON"):
        parse("{circles")
    with pytest.raises(SettingsError, match="must look like"):
        parse('{"circles": 3}')


def test_app_settings_switch_batching_per_model(settings):
    app = create_app(settings, batching=True, batching_overrides='{"circles": {"enabled": false}}')
    registry = app.extensions["serving"].registry
    assert registry.version("circles", servable=False).batcher is None
    assert (
        registry.version("blobs", servable=False).batcher.config.max_batch_size
        == settings.batch_max_size
    )
    registry.close()
    # Off by default (a CPU cannot gain 10% from it: docs/performance.md); on per model.
    assert Settings.from_env({}).batching is False
    default = create_app(settings, batching_overrides='{"blobs": {"enabled": true}}')
    assert default.extensions["serving"].registry.version("circles", servable=False).batcher is None
    assert (
        default.extensions["serving"].registry.version("blobs", servable=False).batcher is not None
    )
    default.extensions["serving"].registry.close()
    with pytest.raises(SettingsError, match="SERVING_BATCHING_OVERRIDES"):
        create_app(settings, batching_overrides='{"circles": {"size": 1}}')


def test_batched_app_answers_exactly_like_unbatched(settings, fashion):
    from tests.helpers import image_bytes

    batched = create_app(settings, batching=True, batch_max_delay_us=20_000).test_client()
    unbatched = create_app(settings, batching=False).test_client()
    images = [image_bytes(fashion["images"][i]) for i in range(16)]

    def ask(client, png):
        return client.post("/predict", data=png, content_type="image/png").get_json()

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda png: ask(batched, png), images))
    for png, answer in zip(images, got, strict=True):
        expected = ask(unbatched, png)["predictions"][0]
        assert answer["predictions"][0]["label"] == expected["label"]
        for name, p in expected["probabilities"].items():
            assert answer["predictions"][0]["probabilities"][name] == pytest.approx(p, abs=1e-6)
