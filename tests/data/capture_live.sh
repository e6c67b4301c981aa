#!/bin/sh
# Record real loopback traffic with tcpdump for the differential corpus (run as root):
# an HTTP exchange, a refused TCP connection, UDP datagrams. Writes tests/data/live/lo.pcap.
set -e
out="$(dirname "$0")/live/lo.pcap"
mkdir -p "$(dirname "$out")"
tcpdump -i lo -s 256 -w "$out" 'tcp port 18080 or tcp port 18081 or udp port 18053' 2>/dev/null &
pid=$!
sleep 1
python3 -m http.server 18080 --bind 127.0.0.1 >/dev/null 2>&1 &
srv=$!
sleep 1
for i in 1 2 3 4 5; do python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:18080/').read()"; done
python3 -c "
import socket
try: socket.create_connection(('127.0.0.1', 18081), timeout=1)
except OSError: pass
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(5): s.sendto(b'datagram %d' % i, ('127.0.0.1', 18053))
"
sleep 1
kill $srv $pid
wait $pid 2>/dev/null || true
