"""Where joined packets go: files (file.py, rotation.py) and tcpdump's lines (lines.py).
Every sink implements ptcap.pipeline.packet.Sink: write(packet), tick(now), close()."""
