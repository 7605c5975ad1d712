"""`make bench`: the platform measured beside cryptofeed and the bare decode, on the same messages (see harness)."""
