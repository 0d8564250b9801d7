"""Feeds: sources that put k2 wire messages on Kafka, each accounting exactly for what it sent.

* :mod:`k2.feeds.asx` replays the recorded ASX sample (10-14 March 2014).
* :mod:`k2.feeds.simulator` generates a synthetic market with injected gaps, duplicates,
  reorders and poison messages.
* :mod:`k2.feeds.producer` is the one idempotent Kafka producer both use.
* :mod:`k2.feeds.report` is the :class:`FeedReport` both return: the ground truth ingest is
  checked against.
"""

from k2.feeds.asx import load_asx, read_asx, replay_asx
from k2.feeds.producer import FeedProducer
from k2.feeds.report import Duplicate, FeedReport, Gap, Poison, Reorder, StreamRange
from k2.feeds.simulator import POISON_KINDS, Simulation, SimulatorConfig, generate, simulate

__all__ = [
    "POISON_KINDS",
    "Duplicate",
    "FeedProducer",
    "FeedReport",
    "Gap",
    "Poison",
    "Reorder",
    "Simulation",
    "SimulatorConfig",
    "StreamRange",
    "generate",
    "load_asx",
    "read_asx",
    "replay_asx",
    "simulate",
]
