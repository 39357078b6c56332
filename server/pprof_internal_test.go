package server

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestPprofFromLoopbackOnly: the management listener served
// /debug/pprof/ to anyone who reached it; in a container its address must
// be reachable for metrics scraping, which opened CPU profiles and
// traces (minutes of work on request) to the network. Profiles are now
// served to loopback peers only unless listen.pprof says any (or off).
func TestPprofFromLoopbackOnly(t *testing.T) {
	for _, tc := range []struct {
		setting, from string
		want          int
	}{
		{"", "192.0.2.5:40000", http.StatusForbidden},
		{"", "127.0.0.1:40000", http.StatusOK},
		{"", "[::1]:40000", http.StatusOK},
		{"any", "192.0.2.5:40000", http.StatusOK},
		{"off", "127.0.0.1:40000", http.StatusNotFound},
	} {
		cfg := &Config{}
		cfg.Listen.PProf = tc.setting
		cfg.applyDefaults()
		s := &Server{cfg: cfg, metrics: newMetrics()}
		h := s.managementHandler(nil)
		// Behind a proxy on the host (a sidecar, nginx), every client
		// is a loopback peer: a forwarded request is not the host's.
		r := httptest.NewRequest("GET", "/debug/pprof/", nil)
		r.RemoteAddr = "127.0.0.6:40000"
		r.Header.Set("X-Forwarded-For", "203.0.113.9")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if want := map[string]int{"": http.StatusForbidden, "any": http.StatusOK, "off": http.StatusNotFound}[tc.setting]; w.Code != want {
			t.Errorf("listen.pprof %q, a request forwarded by a local proxy: %d, want %d", tc.setting, w.Code, want)
		}
		for _, path := range []string{"/debug/pprof/", "/debug/pprof/cmdline"} {
			r := httptest.NewRequest("GET", path, nil)
			r.RemoteAddr = tc.from
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tc.want {
				t.Errorf("listen.pprof %q, %s from %s: %d, want %d", tc.setting, path, tc.from, w.Code, tc.want)
			}
		}
		// Metrics stay open to the scraper.
		r = httptest.NewRequest("GET", "/metrics", nil)
		r.RemoteAddr = "192.0.2.5:40000"
		w = httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != http.StatusOK {
			t.Errorf("listen.pprof %q: /metrics from afar: %d", tc.setting, w.Code)
		}
	}
}
