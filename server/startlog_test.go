package server_test

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestStartLogNamesListeners: the start-up log has one line per listener,
// with its address and what it serves, or says that it is off.
func TestStartLogNamesListeners(t *testing.T) {
	var lines []map[string]any
	for _, l := range strings.Split(logs.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && (m["msg"] == "listening" || m["msg"] == "listener off") {
			lines = append(lines, m)
		}
	}
	want := map[string]string{"grpc": gw.GRPCAddr(), "public": gw.HTTPAddr(), "management": gw.ManagementAddr(),
		"portal": gw.PortalAddr(), "webhook": gw.WebhookAddr()}
	seen := map[string]bool{}
	for _, m := range lines {
		name, _ := m["listener"].(string)
		addr, _ := m["address"].(string)
		seen[name] = true
		if addr != want[name] {
			t.Errorf("listener %s logged at %q, bound at %q", name, addr, want[name])
		}
		if m["serves"] == "" || m["serves"] == nil {
			t.Errorf("listener %s: no word of what it serves: %v", name, m)
		}
		if m["msg"] == "listener off" && m["enable_with"] == nil {
			t.Errorf("listener %s is off and the log does not say how to turn it on: %v", name, m)
		}
	}
	for name := range want {
		if !seen[name] {
			t.Errorf("no start-up line for the %s listener:\n%v", name, lines)
		}
	}
}
