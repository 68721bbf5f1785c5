"""Tests for colonyrl.scheme.wire: round trips, corruption detection, compression ratios, Compressor policy."""

from __future__ import annotations

import pickle
import time
import zlib

import lz4.frame
import numpy as np
import pytest

from colonyrl.scheme.wire import Compressor, Packed, PackedArray, WireError, pack, unpack

RNG = np.random.default_rng(0)


def image_frames(t: int = 64, n: int = 8, hw: int = 84, repeat: int = 16, seed: int = 0) -> np.ndarray:
    """Atari-like synthetic uint8 frames [T, N, H, W], as in platform.md §6: 8 grey levels, each frame
    repeated ``repeat`` times along time. The repeat distance (N*H*W = 56 KB) is inside lz4's 64 KB window."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (t // repeat, n, hw, hw), dtype=np.uint8) // 32 * 32
    return np.repeat(base, repeat, axis=0)


def float_noise(nbytes: int = 1 << 20, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(nbytes // 4).astype(np.float32)


ARRAYS: dict[str, np.ndarray] = {
    "f32": RNG.standard_normal((16, 4, 3)).astype(np.float32),
    "f64": RNG.standard_normal((7, 2)),
    "u8": RNG.integers(0, 256, (5, 9, 9), dtype=np.uint8),
    "bool": RNG.random((33, 4)) < 0.3,
    "i64": RNG.integers(-(2**62), 2**62, (11,), dtype=np.int64),
    "odd": RNG.standard_normal((3, 5, 7, 1)).astype(np.float32),
    "zero_d_f32": np.array(3.5, dtype=np.float32),
    "zero_d_i64": np.array(-7, dtype=np.int64),
    "empty": np.zeros((0, 4), dtype=np.float32),
    "empty_mid": np.zeros((3, 0, 2), dtype=np.int64),
    "big_endian": np.arange(6, dtype=">i4").reshape(2, 3),
    "f16": RNG.standard_normal(10).astype(np.float16),
    "datetime": np.array(["2024-01-01", "2025-06-30"], dtype="datetime64[D]"),
}


def assert_same(a: np.ndarray, b: np.ndarray) -> None:
    assert b.dtype == a.dtype and b.shape == a.shape
    assert np.array_equal(a, b)


# -- round trips ------------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [True, False], ids=["lz4", "raw"])
def test_round_trip_all_dtypes_and_shapes(compress: bool) -> None:
    packed = pack(ARRAYS, compress=compress)
    assert {p.codec for p in packed.arrays.values()} == {"lz4" if compress else "raw"}
    out = unpack(packed)
    assert list(out) == list(ARRAYS)
    for key, a in ARRAYS.items():
        assert_same(a, out[key])
        assert packed.arrays[key].dtype == a.dtype.str
        assert packed.arrays[key].shape == a.shape
    assert packed.raw_bytes == sum(a.nbytes for a in ARRAYS.values())
    assert packed.wire_bytes == sum(len(p.payload) for p in packed.arrays.values())


@pytest.mark.parametrize("compress", [True, False], ids=["lz4", "raw"])
def test_non_contiguous_input(compress: bool) -> None:
    base = RNG.standard_normal((6, 8, 5)).astype(np.float32)
    views = {"transposed": base.transpose(2, 0, 1), "strided": base[::2, :, 1::2], "fortran": np.asfortranarray(base)}
    assert not views["transposed"].flags.c_contiguous and not views["strided"].flags.c_contiguous
    out = unpack(pack(views, compress=compress))
    for key, a in views.items():
        assert_same(a, out[key])
        assert out[key].flags.c_contiguous


def test_compress_a_collection_of_keys() -> None:
    packed = pack(ARRAYS, compress={"u8", "bool", "not_there"})
    codecs = {k: p.codec for k, p in packed.arrays.items()}
    assert codecs["u8"] == codecs["bool"] == "lz4"
    assert all(c == "raw" for k, c in codecs.items() if k not in ("u8", "bool"))
    # a single str is one key, not a collection of letters
    assert pack({"obs": ARRAYS["u8"], "o": ARRAYS["f32"]}, compress="obs").arrays["o"].codec == "raw"
    for key, a in unpack(packed).items():
        assert_same(ARRAYS[key], a)


def test_unpacked_arrays_are_views_and_raw_has_crc() -> None:
    packed = pack({"a": ARRAYS["f32"]}, compress=False)
    p = packed.arrays["a"]
    assert p.crc32 == zlib.crc32(p.payload)
    out = unpack(packed)["a"]
    assert not out.flags.writeable  # np.frombuffer over the payload bytes: no copy
    assert out.base is not None


def test_packed_is_picklable() -> None:
    packed = pack(ARRAYS, compress={"u8", "f32"})
    again = pickle.loads(pickle.dumps(packed, protocol=pickle.HIGHEST_PROTOCOL))
    assert isinstance(again, Packed) and isinstance(again.arrays["u8"], PackedArray)
    assert again == packed
    for key, a in unpack(again).items():
        assert_same(ARRAYS[key], a)


def test_empty_dict_and_ratio() -> None:
    packed = pack({})
    assert packed == Packed({}, 0, 0) and packed.ratio == 1.0 and unpack(packed) == {}


def test_unsupported_dtypes_are_rejected_on_pack() -> None:
    with pytest.raises(TypeError, match="'objs'"):
        pack({"objs": np.array([1, "a"], dtype=object)})
    with pytest.raises(TypeError, match="'rec'"):
        pack({"rec": np.zeros(3, dtype=[("x", "<f4"), ("y", "<i8")])})


# -- corruption ---------------------------------------------------------------------------------------


def _with_payload(packed: Packed, key: str, payload: bytes) -> Packed:
    arrays = dict(packed.arrays)
    arrays[key] = arrays[key]._replace(payload=payload)
    return packed._replace(arrays=arrays)


def _flip(payload: bytes, index: int, mask: int = 0xFF) -> bytes:
    b = bytearray(payload)
    b[index] ^= mask
    return bytes(b)


def test_flipped_byte_in_lz4_payload_raises_naming_the_key() -> None:
    packed = pack({"obs": float_noise(4096), "other": ARRAYS["u8"]}, compress=True)
    payload = packed.arrays["obs"].payload
    for index in (len(payload) // 2, 5, len(payload) - 1):  # data, frame header, content checksum
        with pytest.raises(WireError, match="'obs'"):
            unpack(_with_payload(packed, "obs", _flip(payload, index)))


@pytest.mark.parametrize("name", ["f32_noise", "i64_ramp", "sparse_bool"])
def test_no_flipped_byte_decodes_to_wrong_data(name: str) -> None:
    """Every single-byte flip anywhere in a frame either raises WireError or decodes to the very same
    array: some lz4 match bits are redundant on repetitive data. Data is never silently wrong."""
    a = {
        "f32_noise": float_noise(256),
        "i64_ramp": np.arange(300, dtype=np.int64) % 7,
        "sparse_bool": np.random.default_rng(2).random(1000) < 0.1,
    }[name]
    packed = pack({"k": a}, compress=True)
    payload = packed.arrays["k"].payload
    raised = 0
    for index in range(len(payload)):
        for mask in (0x01, 0x80, 0xFF):
            try:
                out = unpack(_with_payload(packed, "k", _flip(payload, index, mask)))
            except WireError as e:
                assert "'k'" in str(e)
                raised += 1
            else:
                assert_same(a, out["k"])
    assert raised > 0.8 * 3 * len(payload)


@pytest.mark.parametrize("compress", [True, False], ids=["lz4", "raw"])
def test_truncated_payload_raises(compress: bool) -> None:
    packed = pack({"obs": image_frames(t=16, n=2), "x": ARRAYS["f32"]}, compress=compress)
    payload = packed.arrays["obs"].payload
    for n in (0, 3, len(payload) // 2, len(payload) - 1):
        with pytest.raises(WireError, match="'obs'.*(truncated|corrupted)"):
            unpack(_with_payload(packed, "obs", payload[:n]))


def test_flipped_byte_in_raw_payload_raises_checksum_mismatch() -> None:
    packed = pack({"rew": ARRAYS["f32"]}, compress=False)
    payload = packed.arrays["rew"].payload
    with pytest.raises(WireError, match="'rew'.*checksum mismatch"):
        unpack(_with_payload(packed, "rew", _flip(payload, len(payload) // 2, 0x01)))


@pytest.mark.parametrize("compress", [True, False], ids=["lz4", "raw"])
def test_shape_or_dtype_disagreeing_with_payload_raises_size_mismatch(compress: bool) -> None:
    packed = pack({"obs": ARRAYS["f32"]}, compress=compress)
    p = packed.arrays["obs"]
    for bad in (p._replace(shape=(16, 4, 4)), p._replace(dtype="<f8")):
        with pytest.raises(WireError, match="'obs'.*size mismatch"):
            unpack(packed._replace(arrays={"obs": bad}))


def test_invalid_metadata_raises() -> None:
    p = pack({"a": ARRAYS["f32"]}, compress=False).arrays["a"]
    cases = {
        "invalid dtype": p._replace(dtype="<q7"),
        "cannot be rebuilt": p._replace(dtype="|O"),
        "invalid shape": p._replace(shape=(16, -4, -3)),
        "unknown codec": p._replace(codec="zstd"),
    }
    for match, bad in cases.items():
        with pytest.raises(WireError, match=f"'a'.*{match}"):
            unpack(Packed({"a": bad}, 0, 0))


def test_lz4_frame_without_content_checksum_is_refused() -> None:
    a = ARRAYS["u8"]
    unchecked = lz4.frame.compress(memoryview(a).cast("B"), content_checksum=False)
    bad = PackedArray(a.dtype.str, a.shape, "lz4", unchecked)
    with pytest.raises(WireError, match="'x'.*no content checksum"):
        unpack(Packed({"x": bad}, a.nbytes, len(unchecked)))


# -- ratios -----------------------------------------------------------------------------------------


def test_image_frames_compress_well_and_float_noise_does_not() -> None:
    frames, noise = image_frames(), float_noise()
    packed = pack({"frames": frames, "noise": noise}, compress=True)
    ratio = {k: frames.nbytes / len(p.payload) if k == "frames" else noise.nbytes / len(p.payload)
             for k, p in packed.arrays.items()}
    print(f"\nratios: uint8 frames {ratio['frames']:.2f}x, float32 noise {ratio['noise']:.3f}x")
    assert ratio["frames"] > 5.0
    assert 0.98 < ratio["noise"] < 1.05
    assert packed.raw_bytes / packed.wire_bytes == pytest.approx(packed.ratio)


# -- Compressor ---------------------------------------------------------------------------------------


def rollout(step: int = 0) -> dict[str, np.ndarray]:
    return {"obs": image_frames(t=32, seed=step), "logp": float_noise(64 * 1024, seed=step + 100)}


def codecs(packed: Packed) -> dict[str, str]:
    return {k: p.codec for k, p in packed.arrays.items()}


def test_auto_same_node_never_compresses() -> None:
    comp = Compressor("auto", same_node=True)
    for step in range(3):
        packed = comp.pack(rollout(step))
        assert set(codecs(packed).values()) == {"raw"}
        assert packed.wire_bytes == packed.raw_bytes
    assert comp.decisions == {} and not comp.active


def test_auto_cross_node_compresses_frames_but_not_float_noise() -> None:
    comp = Compressor("auto", same_node=False)
    for step in range(3):
        data = rollout(step)
        packed = comp.pack(data)
        assert codecs(packed) == {"obs": "lz4", "logp": "raw"}
        for key, a in unpack(packed).items():
            assert_same(data[key], a)
    assert comp.decisions == {"obs": True, "logp": False}
    assert comp.ratios["obs"] > 5.0 and comp.ratios["logp"] < 1.5


def test_auto_resamples_raw_keys_and_drops_keys_that_stop_compressing() -> None:
    comp = Compressor("auto", same_node=False, resample_every=3)
    noise, zeros = float_noise(64 * 1024), np.zeros(16 * 1024, np.float32)
    # "a" starts incompressible and becomes compressible: picked up at the next sample (pack 4).
    # "b" starts compressible and becomes noise: dropped at once (its ratio is measured every pack).
    seen = []
    for step in range(7):
        a = noise if step < 1 else zeros
        b = zeros if step < 1 else noise
        seen.append(codecs(comp.pack({"a": a, "b": b})))
    assert [s["a"] for s in seen] == ["raw", "raw", "raw", "lz4", "lz4", "lz4", "lz4"]
    assert [s["b"] for s in seen] == ["lz4", "raw", "raw", "raw", "raw", "raw", "raw"]


def test_mode_true_and_false_ignore_the_node() -> None:
    data = rollout()
    assert set(codecs(Compressor(True, same_node=True).pack(data)).values()) == {"lz4"}
    assert set(codecs(Compressor(False, same_node=False).pack(data)).values()) == {"raw"}


def test_auto_keeps_empty_arrays_raw() -> None:
    comp = Compressor("auto", same_node=False)
    packed = comp.pack({"e": np.zeros((0, 3), np.float32)})
    assert codecs(packed) == {"e": "raw"} and unpack(packed)["e"].shape == (0, 3)


@pytest.mark.parametrize("kwargs", [{"mode": "yes"}, {"mode": 1}, {"mode": "auto", "min_ratio": 0},
                                    {"mode": "auto", "resample_every": 0}])
def test_compressor_rejects_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        Compressor(same_node=False, **kwargs)


def test_compressor_output_is_picklable() -> None:
    packed = Compressor("auto", same_node=False).pack(rollout())
    assert pickle.loads(pickle.dumps(packed)) == packed


# -- throughput (printed, not asserted: shared 2-core CI boxes are noisy) -----------------------------


def _median_s(fn, reps: int = 5) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def test_print_throughput_10mb(capsys: pytest.CaptureFixture[str]) -> None:
    frames = np.ascontiguousarray(image_frames(t=192, n=8).reshape(-1)[:10_000_000])  # 192*8*84*84 = 10.8 MB, cut
    assert frames.nbytes == 10_000_000
    noise = np.random.default_rng(3).integers(0, 256, 10_000_000, dtype=np.uint8)
    mb = 10.0
    lines = []
    for name, a in (("uint8 frames", frames), ("uint8 noise", noise)):
        lz = pack({"x": a}, compress=True)
        raw = pack({"x": a}, compress=False)
        lines.append(
            f"{name:12s} 10 MB: lz4 pack {mb / _median_s(lambda a=a: pack({'x': a}, True)):6.0f} MB/s "
            f"(ratio {lz.ratio:5.2f}), lz4 unpack {mb / _median_s(lambda lz=lz: unpack(lz)):6.0f} MB/s | "
            f"raw pack {mb / _median_s(lambda a=a: pack({'x': a}, False)):6.0f} MB/s, "
            f"raw unpack {mb / _median_s(lambda raw=raw: unpack(raw)):6.0f} MB/s"
        )
    buf = memoryview(noise)
    crc_s = _median_s(lambda: zlib.crc32(buf))
    copy_s = _median_s(lambda: bytes(buf))
    lines.append(f"zlib.crc32 of 10 MB: {crc_s * 1e3:.2f} ms ({mb / crc_s:.0f} MB/s); bytes() copy {copy_s * 1e3:.2f} ms")
    with capsys.disabled():
        print("\n" + "\n".join(lines))


# -- Dict observations: nested dicts travel flat ("obs/image") ------------------------------------------


def dict_rollout(step: int = 0) -> dict:
    """A rollout whose observation is a dict: uint8 frames and a float vector."""
    frames = image_frames(t=16, n=2, seed=step)
    return {"obs": {"image": frames, "vec": float_noise(16 * 2 * 4 * 4, seed=step).reshape(16, 2, 4)},
            "actions": np.arange(32, dtype=np.int64).reshape(16, 2), "valid": np.ones((16, 2), bool)}


def assert_same_tree(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for key in a:
        if isinstance(a[key], dict):
            assert_same_tree(a[key], b[key])
        else:
            assert_same(a[key], b[key])


@pytest.mark.parametrize("compress", [True, False, {"obs"}], ids=["lz4", "raw", "obs-only"])
def test_dict_observations_round_trip_exactly(compress) -> None:
    data = dict_rollout()
    packed = pack(data, compress=compress)
    assert list(packed.arrays) == ["obs/image", "obs/vec", "actions", "valid"]
    assert packed.arrays["obs/image"].dtype == "|u1"  # uint8 stays uint8 on the wire
    if compress == {"obs"}:  # a top-level key covers the arrays under it
        assert codecs(packed) == {"obs/image": "lz4", "obs/vec": "lz4", "actions": "raw", "valid": "raw"}
    out = unpack(pickle.loads(pickle.dumps(packed)))
    assert_same_tree(data, out)
    assert out["obs"]["image"].dtype == np.uint8


def test_compressor_decides_per_array_of_a_dict_observation() -> None:
    comp = Compressor("auto", same_node=False)
    data = dict_rollout()
    packed = comp.pack(data)
    assert codecs(packed)["obs/image"] == "lz4" and codecs(packed)["obs/vec"] == "raw"
    assert comp.ratios["obs/image"] > 5.0  # uint8 frames compress, float noise does not
    assert packed.wire_bytes < packed.raw_bytes / 2
    assert_same_tree(data, unpack(packed))


def test_keys_that_would_not_round_trip_are_refused() -> None:
    with pytest.raises(ValueError, match="obs/image"):
        pack({"obs/image": ARRAYS["u8"]})
    with pytest.raises(ValueError, match="a/b"):
        pack({"obs": {"a/b": ARRAYS["u8"]}})
