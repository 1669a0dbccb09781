"""SNMP credentials: v2c community or v3 USM user, turned into pysnmp auth data.

v3 privacy (AES) needs the ``cryptography`` package, a hard dependency of masa, so an
authPriv user never silently falls back to sending in clear text.
"""

from __future__ import annotations

from dataclasses import dataclass

from pysnmp.hlapi.v3arch.asyncio import (
    CommunityData,
    UsmUserData,
    usmAesCfb128Protocol,
    usmAesCfb256Protocol,
    usmHMAC192SHA256AuthProtocol,
    usmHMAC384SHA512AuthProtocol,
    usmHMACMD5AuthProtocol,
    usmHMACSHAAuthProtocol,
    usmNoPrivProtocol,
)

AUTH_PROTOCOLS = {
    "MD5": usmHMACMD5AuthProtocol,
    "SHA": usmHMACSHAAuthProtocol,
    "SHA-256": usmHMAC192SHA256AuthProtocol,
    "SHA-512": usmHMAC384SHA512AuthProtocol,
}
PRIV_PROTOCOLS = {"AES": usmAesCfb128Protocol, "AES-256": usmAesCfb256Protocol}


@dataclass(frozen=True)
class Credentials:
    """Either ``community`` (v2c) or ``v3_user`` with keys (v3 USM)."""

    community: str | None = None
    v3_user: str | None = None
    auth_key: str | None = None
    priv_key: str | None = None
    auth_protocol: str = "SHA"
    priv_protocol: str = "AES"

    def __post_init__(self) -> None:
        if (self.community is None) == (self.v3_user is None):
            raise ValueError("give either a v2c community or a v3 user")
        if self.v3_user is not None:
            if self.auth_protocol.upper() not in AUTH_PROTOCOLS:
                raise ValueError(f"unknown auth protocol {self.auth_protocol!r}: use {', '.join(AUTH_PROTOCOLS)}")
            if self.priv_protocol.upper() not in PRIV_PROTOCOLS:
                raise ValueError(f"unknown privacy protocol {self.priv_protocol!r}: use {', '.join(PRIV_PROTOCOLS)}")
            if self.priv_key and not self.auth_key:
                raise ValueError("SNMPv3 privacy needs an auth key too")
            for key in (self.auth_key, self.priv_key):
                if key is not None and len(key) < 8:
                    raise ValueError("SNMPv3 keys must be at least 8 characters (RFC 3414)")

    def pysnmp(self) -> CommunityData | UsmUserData:
        if self.community is not None:
            return CommunityData(self.community, mpModel=1)
        if self.auth_key is None:
            return UsmUserData(self.v3_user)
        return UsmUserData(
            self.v3_user,
            authKey=self.auth_key,
            privKey=self.priv_key,
            authProtocol=AUTH_PROTOCOLS[self.auth_protocol.upper()],
            privProtocol=PRIV_PROTOCOLS[self.priv_protocol.upper()] if self.priv_key else usmNoPrivProtocol,
        )

    def __repr__(self) -> str:  # never print keys
        if self.community is not None:
            return "Credentials(v2c)"
        return f"Credentials(v3 user={self.v3_user!r}, {self.auth_protocol}/{self.priv_protocol})"
