//go:build credgw_testclock

package main

import (
	"log/slog"
	"time"

	"github.com/spf13/cobra"
)

// Built only with -tags credgw_testclock, for the end-to-end tests in test/:
// `credgw serve --test-clock-offset D` runs the gateway's own clock (PIV
// validation, certificate validity, activation expiry, the confirm window,
// sweeps) D ahead of the system clock. Release builds do not have the flag.

var clockOffset time.Duration

func addTestClockFlag(cmd *cobra.Command) {
	cmd.Flags().DurationVar(&clockOffset, "test-clock-offset", 0, "TEST BUILD ONLY: run the gateway's clock this far ahead")
}

func testClock(log *slog.Logger) func() time.Time {
	if clockOffset == 0 {
		return nil
	}
	log.Warn("TEST BUILD: the gateway's clock is shifted", "offset", clockOffset.String())
	return func() time.Time { return time.Now().Add(clockOffset) }
}
