package server

import (
	"context"
	"testing"
	"time"
)

// TestScrapesShareStoreReads: every scrape of /metrics read the store (the
// outbox backlog, activations by state), so anyone who reached the
// management listener could take the store's read connections from the
// RPCs with scrapes; bounding scrapes in flight instead let them starve
// Prometheus of its own (503s, silent alerts). The store-backed gauges are
// read at most once per scrapeTTL, whatever the number of scrapes, and
// every scrape is served.
func TestScrapesShareStoreReads(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	reads := 0
	c := newScrapeRead(func(context.Context) (int, error) { reads++; return reads * 10, nil }, func() time.Time { return now })
	for i := range 50 {
		if v, err := c.get(); err != nil || v != 10 {
			t.Fatalf("scrape %d: %d, %v", i, v, err)
		}
	}
	if reads != 1 {
		t.Fatalf("50 scrapes within %s read the store %d times, want 1", scrapeTTL, reads)
	}
	now = now.Add(scrapeTTL)
	if v, err := c.get(); err != nil || v != 20 || reads != 2 {
		t.Fatalf("after %s: %d, %v, %d reads; want a fresh read", scrapeTTL, v, err, reads)
	}
}
