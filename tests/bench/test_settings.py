"""Parsing of the bench's arguments, and settings that survive the round trip through results.jsonl."""

import math

import pytest

from minigrad.bench.settings import (MAX_STEPS, Settings, UsageError, check_fits_data, format_bytes, load_data,
                                     parse_batch_sizes, parse_bytes, parse_int, parse_real)


def test_batch_sizes_any_positive_integers_in_order_without_duplicates():
    assert parse_batch_sizes("1, 17,17,4") == (1, 17, 4)
    assert parse_batch_sizes("AUTO") == "auto"
    for bad in ("0", "-3", "2.5", "x", "", "4,,8"):
        with pytest.raises(UsageError, match="--batch-sizes"):
            parse_batch_sizes(bad)


def test_sizes_in_bytes():
    assert parse_bytes("2GiB") == 2 * 1024**3
    assert parse_bytes("512 MB") == 512 * 1000**2
    assert parse_bytes("1.5gib") == int(1.5 * 1024**3)
    assert parse_bytes("4096") == 4096
    for bad in ("lots", "2 GiBs", "-1GiB", "0"):
        with pytest.raises(UsageError, match="--memory-budget"):
            parse_bytes(bad)
    assert format_bytes(512) == "512 B" and format_bytes(3 * 1024**2) == "3.0 MiB"
    assert format_bytes(5 * 1024**3) == "5.00 GiB" and format_bytes(None) == "-"


def test_numbers():
    assert parse_int(" 7 ", "--x") == 7 and parse_int("0", "--seed", minimum=0) == 0
    with pytest.raises(UsageError, match="--x must be a positive integer; got 0"):
        parse_int("0", "--x")
    assert parse_real("0.5", "--lr", 0, math.inf) == 0.5
    for bad in ("0", "inf", "nan", "-1", "x"):
        with pytest.raises(UsageError, match="--lr must be a finite positive number; got"):
            parse_real(bad, "--lr", 0, math.inf)
    with pytest.raises(UsageError, match="--x must be at most 1,000; got '1001'"):
        parse_int("1001", "--x", maximum=1000)


@pytest.mark.parametrize("text", ["1", "1.5", "-0.1", "nan", "inf"])
def test_momentum_interval_is_said_the_same_way_for_every_bad_value(text):
    """1 and 1.5 are both outside [0, 1): the message says so in both cases."""
    with pytest.raises(UsageError, match=r"--momentum must be a number in \[0, 1\); got"):
        parse_real(text, "--momentum", 0, 1, low_open=False, high_open=True)
    assert parse_real("0", "--momentum", 0, 1, low_open=False, high_open=True) == 0
    assert parse_real("0.999", "--momentum", 0, 1, low_open=False, high_open=True) == 0.999


def test_a_very_long_argument_is_shortened_in_the_message():
    with pytest.raises(UsageError) as info:
        parse_int("9" * 200, "--samples", maximum=10**9)
    assert "(200 characters)" in str(info.value) and len(str(info.value)) < 120


def _sets(n_train, n_test):
    return list(range(n_train)), list(range(n_test))  # check_fits_data needs only len()


def test_a_batch_larger_than_its_data_set_is_refused():
    train, test = _sets(60000, 10000)
    with pytest.raises(UsageError, match=r"batch size 100,000 is larger than the training set \(60,000 samples"):
        check_fits_data(Settings(batch_sizes=(64, 100000)), (64, 100000), train, test)
    inference = Settings(mode="inference", batch_sizes=(10001,))
    with pytest.raises(UsageError, match=r"batch size 10,001 is larger than the test set \(10,000 samples"):
        check_fits_data(inference, (10001,), train, test)
    check_fits_data(Settings(batch_sizes=(60000,)), (60000,), train, test)
    check_fits_data(Settings(mode="inference", batch_sizes=(10000,)), (10000,), train, test)


def test_train_subset_cuts_the_training_set_and_bounds_the_batch(monkeypatch):
    from minigrad import data

    full = data.synthetic_mnist(n_train=600, n_test=200, seed=0)
    monkeypatch.setattr(data, "load_dataset", lambda name, data_dir, seed: full)
    train, test = load_data(Settings(dataset="synthetic", train_subset=100))
    assert len(train) == 100 and train.synthetic and (train.images == full[0].images[:100]).all() and test is full[1]
    with pytest.raises(UsageError, match=r"batch size 160 is larger than the training set \(100 samples"):
        check_fits_data(Settings(batch_sizes=(16, 160)), (16, 160), train, test)
    with pytest.raises(UsageError, match=r"--train-subset 601 is larger than the training set \(600 samples"):
        load_data(Settings(dataset="synthetic", train_subset=601))


def test_a_budget_that_cannot_finish_is_refused():
    train, test = _sets(60000, 10000)
    with pytest.raises(UsageError, match=r"--epochs 20000: 1,200,000,000 samples per batch size"):
        check_fits_data(Settings(samples=None, epochs=20000), (64,), train, test)
    with pytest.raises(UsageError, match=r"--samples 20000000: 20,000,000 steps at batch size 1; at most "
                                         r"10,000,000 steps"):
        check_fits_data(Settings(samples=20_000_000), (1, 64), train, test)
    check_fits_data(Settings(samples=MAX_STEPS), (1,), train, test)  # exactly at the limit


def test_settings_round_trip():
    s = Settings(backends=("numpy", "torch"), batch_sizes=(1, 17), memory_budget=None, target_accuracy=0.9)
    assert Settings.from_dict(s.to_dict()) == s
    auto = Settings(backends=("numpy",), batch_sizes="auto", memory_budget=2**30)
    assert Settings.from_dict(auto.to_dict()) == auto
    with pytest.raises(UsageError, match="unknown keys"):
        Settings.from_dict({**s.to_dict(), "colour": "red"})


@pytest.mark.parametrize("rule,accumulate,batch,expected", [
    ("none", 1, 256, 0.01), ("linear", 1, 256, 0.04), ("linear", 4, 16, 0.01), ("sqrt", 1, 16, 0.005),
    ("sqrt", 2, 128, 0.02), ("linear-sqrt", 1, 16, 0.0025), ("linear-sqrt", 1, 256, 0.02)])
def test_lr_is_scaled_with_the_virtual_batch(rule, accumulate, batch, expected):
    s = Settings(lr=0.01, lr_scaling=rule, accumulate=accumulate, base_batch_size=64)
    assert s.lr_for(batch) == pytest.approx(expected)


def test_budget_in_samples():
    assert Settings(samples=500).budget_samples(60000) == 500
    assert Settings(samples=None, epochs=2).budget_samples(60000) == 120000
