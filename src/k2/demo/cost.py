"""The cost model: dollars per million messages landed, from measured throughput and bytes.

Three terms, each a measured ratio times a public list price (``Prices``):

* compute: ingest CPU seconds per message, billed as vCPU-hours of an on-demand instance;
* requests: objects written per message (every data file, manifest and metadata file is one PUT);
* storage: Parquet bytes per message, for one month in object storage.

Left out, and said so wherever the figure is shown: the Kafka cluster, network transfer, query
compute, and storage beyond the first month (add ``storage`` once per month retained). Pure: the
demo measures, this module only multiplies.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["AWS_US_EAST_1", "FORMULA", "Cost", "Measured", "Prices", "cost_per_million"]

MILLION = 1_000_000
_GIB = 2**30  # S3 bills a "GB-month" of 2^30 bytes


@dataclass(frozen=True)
class Prices:
    """List prices in USD. ``source`` says where they were read, and when."""

    vcpu_hour: float
    storage_gb_month: float
    put_per_1000: float
    source: str


# AWS us-east-1 on-demand list prices (read 2026-12):
# - EC2 m7g.large (2 vCPU, Graviton3): $0.0816/hour -> $0.0408 per vCPU-hour
#   https://aws.amazon.com/ec2/pricing/on-demand/
# - S3 Standard storage, first 50 TB: $0.023 per GB-month; PUT/COPY/POST/LIST: $0.005 per 1,000
#   https://aws.amazon.com/s3/pricing/
AWS_US_EAST_1 = Prices(
    vcpu_hour=0.0816 / 2,
    storage_gb_month=0.023,
    put_per_1000=0.005,
    source="AWS us-east-1 list prices: EC2 m7g.large on-demand, S3 Standard (2026-12)",
)


@dataclass(frozen=True)
class Measured:
    """What one run measured: the ingest run that gives the throughput, and the warehouse after."""

    messages: int  # messages the timed ingest run landed
    cpu_s: float  # CPU seconds the ingest spent on them (all its threads)
    wall_s: float  # wall seconds of the same run (recorded; the model prices CPU)
    parquet_bytes: int  # data files of the market tables, as stored
    rows: int  # rows in those data files
    objects: int  # files in the warehouse (data, manifests, metadata): at least one PUT each

    def problems(self) -> list[str]:
        """Why these inputs cannot be priced (empty if they can): each must be positive and finite."""
        return [
            f"{name} = {value!r}"
            for name, value in asdict(self).items()
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0)
        ]


@dataclass(frozen=True)
class Cost:
    """USD per million messages, per term; ``total`` counts one month of storage."""

    compute: float
    requests: float
    storage_month: float
    cpu_us_per_message: float
    bytes_per_message: float
    objects_per_million: float

    @property
    def total(self) -> float:
        return self.compute + self.requests + self.storage_month

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total": self.total}


def cost_per_million(m: Measured, prices: Prices = AWS_US_EAST_1) -> Cost:
    """Price a million messages at ``m``'s measured ratios.

    Raises:
        ValueError: an input is zero, negative or not finite (see :meth:`Measured.problems`).
    """
    if problems := m.problems():
        raise ValueError(f"cannot price unmeasured inputs: {', '.join(problems)}")
    cpu_per_msg = m.cpu_s / m.messages
    bytes_per_msg = m.parquet_bytes / m.rows
    objects_per_msg = m.objects / m.rows
    return Cost(
        compute=MILLION * cpu_per_msg / 3600 * prices.vcpu_hour,
        requests=MILLION * objects_per_msg / 1000 * prices.put_per_1000,
        storage_month=MILLION * bytes_per_msg / _GIB * prices.storage_gb_month,
        cpu_us_per_message=cpu_per_msg * 1e6,
        bytes_per_message=bytes_per_msg,
        objects_per_million=objects_per_msg * MILLION,
    )


FORMULA = (
    "per 1M messages = 1e6 * (cpu_s / messages) / 3600 * $/vCPU-h"
    " + 1e6 * (objects / rows) / 1000 * $/1000 PUT"
    " + 1e6 * (parquet_bytes / rows) / 2^30 * $/GB-month"
)
