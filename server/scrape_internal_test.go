package server

import (
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestScrapesBounded: every scrape of /metrics reads the store (the
// outbox backlog, activations by state); anyone who reaches the management
// listener could run any number at once and take the store's read
// connections from the RPCs. At most maxScrapes run at a time; another is
// answered 503 at once, without touching the store.
func TestScrapesBounded(t *testing.T) {
	cfg := &Config{}
	cfg.applyDefaults()
	s := &Server{cfg: cfg, metrics: newMetrics()}
	var mu sync.Mutex
	inside := sync.NewCond(&mu)
	n, release := 0, make(chan struct{})
	s.metrics.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "test_store_query"}, func() float64 {
		mu.Lock()
		n++
		k := n
		inside.Broadcast()
		mu.Unlock()
		if k <= maxScrapes {
			<-release // a slow store
		}
		return 1
	}))
	h := s.managementHandler(nil)
	scrape := func() int {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
		return w.Code
	}
	var wg sync.WaitGroup
	codes := make(chan int, maxScrapes)
	for range maxScrapes {
		wg.Add(1)
		go func() { defer wg.Done(); codes <- scrape() }()
	}
	mu.Lock()
	for n < maxScrapes {
		inside.Wait()
	}
	mu.Unlock()
	if code := scrape(); code != http.StatusServiceUnavailable {
		t.Errorf("a scrape beyond %d at once: %d, want 503", maxScrapes, code)
	}
	close(release)
	wg.Wait()
	close(codes)
	for code := range codes {
		if code != http.StatusOK {
			t.Errorf("a scrape within the bound: %d", code)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if n != maxScrapes {
		t.Errorf("the store was read %d times, want %d", n, maxScrapes)
	}
}
