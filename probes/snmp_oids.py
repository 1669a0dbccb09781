"""Numeric OIDs the SNMP poller asks for.

Numeric on purpose: Debian ships no IETF MIB files and pysnmp ships no IF-MIB, and
resolving names on the hot path would cost more than the request itself.
"""

from __future__ import annotations


def oid(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.strip(".").split("."))


SYS_UPTIME = oid("1.3.6.1.2.1.1.3")  # sysUpTime (scalar; ask for the prefix, get .0)

# IF-MIB columns, indexed by ifIndex
IF_DESCR = oid("1.3.6.1.2.1.2.2.1.2")
IF_SPEED = oid("1.3.6.1.2.1.2.2.1.5")  # Gauge32 bit/s; 2^32-1 means "see ifHighSpeed"
IF_IN_OCTETS = oid("1.3.6.1.2.1.2.2.1.10")  # Counter32
IF_OUT_OCTETS = oid("1.3.6.1.2.1.2.2.1.16")  # Counter32
IF_NAME = oid("1.3.6.1.2.1.31.1.1.1.1")
IF_HC_IN_OCTETS = oid("1.3.6.1.2.1.31.1.1.1.6")  # Counter64
IF_HC_OUT_OCTETS = oid("1.3.6.1.2.1.31.1.1.1.10")  # Counter64
IF_HIGH_SPEED = oid("1.3.6.1.2.1.31.1.1.1.15")  # Gauge32, Mbit/s
IF_COUNTER_DISCONTINUITY = oid("1.3.6.1.2.1.31.1.1.1.19")  # TimeStamp: sysUpTime of the last one

# HOST-RESOURCES-MIB hrProcessorLoad: percent, 1-minute average, one row per CPU
HR_PROCESSOR_LOAD = oid("1.3.6.1.2.1.25.3.3.1.2")

# UCD-SNMP-MIB systemStats raw CPU counters (Counter32, ticks summed over all CPUs)
_UCD = "1.3.6.1.4.1.2021.11"
SS_CPU_RAW = {
    "user": oid(f"{_UCD}.50"),
    "nice": oid(f"{_UCD}.51"),
    "system": oid(f"{_UCD}.52"),
    "idle": oid(f"{_UCD}.53"),
    "wait": oid(f"{_UCD}.54"),
    "interrupt": oid(f"{_UCD}.56"),
    "softirq": oid(f"{_UCD}.61"),
    "steal": oid(f"{_UCD}.64"),
}
SS_CPU_NUM = oid(f"{_UCD}.67")  # ssCpuNumCpus (net-snmp 5.8+)
SS_CPU_IDLE_KEYS = ("idle", "wait")
