"""``notifications.logs``: what clients cause is logged at a bounded rate, without traceback."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from notifications.logs import SERVER_LOGGER, AbuseLogFilter, install


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def logger() -> Iterator[tuple[logging.Logger, Records]]:
    logger = logging.getLogger("tests.logs.uvicorn-like")
    handler = Records()
    logger.addHandler(handler)
    logger.addFilter(AbuseLogFilter())
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, handler
    logger.removeHandler(handler)
    logger.filters.clear()


def invalid_utf8(logger: logging.Logger) -> None:
    try:
        b"\xff".decode()
    except UnicodeDecodeError:
        logger.exception("Invalid UTF-8 sequence received from client.")


def test_two_hundred_client_errors_log_a_bounded_number_of_lines_without_traceback(logger, settings):
    settings.DRF_LIVE = {"LOG_ABUSE_BURST": 10, "LOG_ABUSE_INTERVAL": 60}
    log, handler = logger

    for _ in range(200):
        invalid_utf8(log)

    assert len(handler.records) == 10
    assert all(record.exc_info is None and record.exc_text is None for record in handler.records)
    text = "\n".join(handler.format(record) for record in handler.records)
    assert "Traceback" not in text


def test_the_next_line_let_through_says_how_many_were_left_out(logger, settings):
    settings.DRF_LIVE = {"LOG_ABUSE_BURST": 2, "LOG_ABUSE_INTERVAL": 0.01}
    log, handler = logger
    for _ in range(2):
        invalid_utf8(log)
    filter_ = log.filters[0]
    assert isinstance(filter_, AbuseLogFilter)
    bucket = filter_.buckets["Invalid UTF-8 sequence received from client."]
    bucket.tokens = 0
    bucket.rate = 0  # nothing refills until we say so
    for _ in range(5):
        invalid_utf8(log)
    bucket.rate = 1e9

    invalid_utf8(log)

    assert [record.getMessage() for record in handler.records] == [
        "Invalid UTF-8 sequence received from client.",
        "Invalid UTF-8 sequence received from client.",
        "Invalid UTF-8 sequence received from client. (5 more like it not logged)",
    ]


def test_other_records_pass_untouched(logger, settings):
    settings.DRF_LIVE = {"LOG_ABUSE_BURST": 1}
    log, handler = logger

    for _ in range(20):
        try:
            raise RuntimeError("a bug")
        except RuntimeError:
            log.exception("Exception in ASGI application\n")
        log.info("connection open")

    assert len(handler.records) == 40
    assert all(record.exc_info is not None for record in handler.records[::2])


def test_no_limit_when_the_setting_is_none(logger, settings):
    settings.DRF_LIVE = {"LOG_ABUSE_BURST": None}
    log, handler = logger

    for _ in range(50):
        invalid_utf8(log)

    assert len(handler.records) == 50


def test_install_puts_one_filter_on_the_asgi_servers_logger():
    install()
    install()

    filters = [each for each in logging.getLogger(SERVER_LOGGER).filters if isinstance(each, AbuseLogFilter)]
    assert len(filters) == 1
