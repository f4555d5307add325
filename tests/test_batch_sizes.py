import pytest

from minigrad import batch_sizes


def test_knee_is_the_smallest_batch_within_ten_percent_of_the_best():
    points = [(1, 100.0), (2, 190.0), (4, 300.0), (8, 370.0), (16, 400.0), (32, 395.0), (64, 380.0)]
    assert batch_sizes.knee(points) == (8, 16, 400.0)  # 370 >= 0.9 * 400; 300 is not
    assert batch_sizes.knee([(17, 5.0)]) == (17, 17, 5.0)
    assert batch_sizes.knee([(1, 10.0), (2, 9.5)]) == (1, 1, 10.0)


def test_parse_keeps_order_drops_duplicates_and_names_the_bad_item():
    assert batch_sizes.parse("1, 17,17,4") == (1, 17, 4)
    for bad, item in (("0", "0"), ("4,-3", "-3"), ("2.5", "'2.5'"), ("4,,8", "''")):
        with pytest.raises(ValueError, match=f"--batch-sizes: each batch size must be a positive integer; got {item}"):
            batch_sizes.parse(bad)


def test_a_range_doubles_from_its_start_up_to_its_end():
    assert batch_sizes.parse("1-512") == (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
    assert batch_sizes.parse("3-50, 12, 5") == (3, 6, 12, 24, 48, 5)
    with pytest.raises(ValueError, match="a range a-b needs a <= b; got '8-4'"):
        batch_sizes.parse("8-4")
    with pytest.raises(ValueError, match="got '1-x'"):
        batch_sizes.parse("1-x")


def test_one_default_sweep_for_the_bench_and_the_profilers():
    from minigrad import profile
    from minigrad.bench import settings

    assert settings.Settings().batch_sizes is batch_sizes.DEFAULT_BATCH_SIZES
    assert profile.build_parser().parse_args([]).batch_sizes == list(batch_sizes.DEFAULT_BATCH_SIZES)
