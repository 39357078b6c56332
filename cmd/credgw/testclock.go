//go:build !credgw_testclock

package main

import (
	"log/slog"
	"time"

	"github.com/spf13/cobra"
)

// A release build has no way to move the gateway's clock: see
// testclock_on.go, built only with -tags credgw_testclock (the end-to-end
// tests of activation expiry and the confirm window).

func addTestClockFlag(*cobra.Command) {}

func testClock(*slog.Logger) func() time.Time { return nil }
