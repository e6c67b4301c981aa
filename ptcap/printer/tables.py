"""Names tcpdump prints for numbers: IP protocols, ethertypes."""
from __future__ import annotations

IPPROTO_NAMES = {
    0: "Options", 1: "ICMP", 2: "IGMP", 4: "IPIP", 6: "TCP", 8: "EGP", 9: "IGRP", 17: "UDP",
    33: "DCCP", 41: "IPv6", 43: "Routing", 44: "Fragment", 46: "RSVP", 47: "GRE", 50: "ESP",
    51: "AH", 55: "Mobile IP", 58: "ICMPv6", 62: "Mobile IP (old)", 88: "EIGRP", 89: "OSPF",
    103: "PIM", 108: "Compressed IP", 112: "VRRP", 113: "PGM", 132: "SCTP", 135: "Mobility",
    143: "Ethernet", 240: "pfsync",
}

ETHERTYPE_NAMES = {
    0x0800: "IPv4", 0x0806: "ARP", 0x86DD: "IPv6", 0x8100: "802.1Q", 0x88A8: "802.1Q-QinQ",
    0x9100: "802.1Q-9100", 0x9200: "802.1Q-9200", 0x8035: "Reverse ARP", 0x8847: "MPLS unicast",
    0x8848: "MPLS multicast", 0x8863: "PPPoE D", 0x8864: "PPPoE S", 0x888E: "EAPOL",
    0x88CC: "LLDP", 0x9000: "Loopback", 0x809B: "Appletalk", 0x80F3: "Appletalk ARP",
    0x8137: "IPX", 0x8809: "Slow Protocols", 0x88E5: "MACsec", 0x88F7: "PTP", 0x8902: "CFM",
    0x894F: "NSH", 0x6558: "TEB", 0x0200: "PUP", 0x6000: "DEC", 0x6001: "MOP DL",
    0x6002: "MOP RC", 0x6003: "DN", 0x6004: "LAT", 0x6007: "SCA", 0x8038: "Lanbridge",
    0x803C: "DEC DNS", 0x803E: "DEC DTS", 0x805B: "VEXP", 0x805C: "VPROD", 0x880B: "PPP",
    0x886F: "MS NLB heartbeat", 0x88A2: "AoE", 0x88B7: "OUI Extended", 0x8926: "VN-Tag",
}
