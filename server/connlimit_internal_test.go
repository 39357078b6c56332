package server

import (
	"net"
	"testing"
)

// TestSourceOf: an IPv4 address is its own source; an IPv6 address counts
// with every address of its /64 (limits.source_prefix_v6), since one
// subscriber holds a whole /64 and could otherwise open the limit's worth
// of connections from each of its 2^64 addresses; an IPv4-mapped IPv6
// address is the IPv4 address it maps.
func TestSourceOf(t *testing.T) {
	tests := []struct {
		name   string
		a, b   string // two peers
		bits   int
		shared bool // counted as one source
	}{
		{"same IPv4 address", "192.0.2.1:1000", "192.0.2.1:2000", 64, true},
		{"two IPv4 addresses", "192.0.2.1:1000", "192.0.2.2:1000", 64, false},
		{"one IPv6 /64", "[2001:db8:1:2::1]:1000", "[2001:db8:1:2:ffff:ffff:ffff:fffe]:1000", 64, true},
		{"two IPv6 /64s", "[2001:db8:1:2::1]:1000", "[2001:db8:1:3::1]:1000", 64, false},
		{"one /56 counted per /56", "[2001:db8:1:200::1]:1", "[2001:db8:1:2ff::1]:1", 56, true},
		{"every IPv6 address apart (128)", "[2001:db8:1:2::1]:1000", "[2001:db8:1:2::2]:1000", 128, false},
		{"IPv4-mapped IPv6 is the IPv4 address", "[::ffff:192.0.2.1]:1000", "192.0.2.1:2000", 64, true},
		{"IPv4-mapped of two IPv4 addresses", "[::ffff:192.0.2.1]:1000", "[::ffff:192.0.2.2]:1000", 64, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := &perSourceListener{v6Bits: tt.bits}
			a, err := net.ResolveTCPAddr("tcp", tt.a)
			if err != nil {
				t.Fatal(err)
			}
			b, err := net.ResolveTCPAddr("tcp", tt.b)
			if err != nil {
				t.Fatal(err)
			}
			if got := l.sourceOf(a) == l.sourceOf(b); got != tt.shared {
				t.Errorf("%s and %s: one source %v (%q, %q), want %v", tt.a, tt.b, got, l.sourceOf(a), l.sourceOf(b), tt.shared)
			}
		})
	}
}
