"""TCP segmentation offload as a NIC does it: one large IPv4/TCP frame in, MSS-sized frames out.

Each segment gets the original headers with the IP total length, IP id
(incremented per segment) and both checksums recomputed, the TCP sequence
number advanced, and FIN/PSH only on the last segment. A frame that is not
IPv4/TCP is sent unchanged.
"""

from __future__ import annotations


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``."""
    if len(data) % 2:
        data += b"\0"
    total = sum(int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def l4_checksum(src: bytes, dst: bytes, proto: int, segment: bytes) -> int:
    pseudo = src + dst + bytes([0, proto]) + len(segment).to_bytes(2, "big")
    return checksum(pseudo + segment)


def segment(frame: bytes, mss: int) -> list[bytes]:
    l2 = 18 if frame[12:14] == b"\x81\x00" else 14
    if frame[l2 - 2 : l2] != b"\x08\x00" or len(frame) < l2 + 40:
        return [frame]
    ip_len = (frame[l2] & 0x0F) * 4
    if frame[l2 + 9] != 6:
        return [frame]
    tcp = l2 + ip_len
    tcp_len = (frame[tcp + 12] >> 4) * 4
    payload = frame[tcp + tcp_len :]
    if len(payload) <= mss:
        return [frame]
    ip_id = int.from_bytes(frame[l2 + 4 : l2 + 6], "big")
    seq = int.from_bytes(frame[tcp + 4 : tcp + 8], "big")
    flags = frame[tcp + 13]
    src, dst = frame[l2 + 12 : l2 + 16], frame[l2 + 16 : l2 + 20]
    out = []
    for n, start in enumerate(range(0, len(payload), mss)):
        chunk = payload[start : start + mss]
        last = start + mss >= len(payload)
        ip = bytearray(frame[l2:tcp])
        ip[2:4] = (ip_len + tcp_len + len(chunk)).to_bytes(2, "big")
        ip[4:6] = ((ip_id + n) & 0xFFFF).to_bytes(2, "big")
        ip[10:12] = b"\0\0"
        ip[10:12] = checksum(bytes(ip)).to_bytes(2, "big")
        th = bytearray(frame[tcp : tcp + tcp_len])
        th[4:8] = ((seq + start) & 0xFFFFFFFF).to_bytes(4, "big")
        th[13] = flags if last else flags & ~0x09  # FIN and PSH only on the last segment
        th[16:18] = b"\0\0"
        th[16:18] = l4_checksum(src, dst, 6, bytes(th) + chunk).to_bytes(2, "big")
        out.append(frame[:l2] + bytes(ip) + bytes(th) + chunk)
    return out
