"""The pure-Python murmur2 matches the Java client (Kafka's UtilsTest vectors)."""

import pytest

from processors.runtime.example import CounterProcessor
from processors.runtime.partitioner import murmur2, partition_for
from processors.runtime.testing import TestDriver

# org.apache.kafka.common.utils.UtilsTest.testMurmur2
JAVA = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
    b"": 275646681,
}


@pytest.mark.parametrize(("data", "expected"), JAVA.items())
def test_murmur2_matches_the_java_client(data, expected):
    assert murmur2(data) == expected


def test_partition_is_the_positive_hash_modulo_the_count():
    assert partition_for(b"foobar", 50) == (-790332482 & 0x7FFFFFFF) % 50 == 16


def test_the_test_driver_partitions_like_production():
    driver = TestDriver(CounterProcessor(), partitions=6)
    for key in ("c1", "customer-42", "k999"):
        assert driver.partition_for(key) == partition_for(key.encode(), 6)
