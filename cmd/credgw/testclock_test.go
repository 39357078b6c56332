//go:build !credgw_testclock

package main

import "testing"

// TestReleaseHasNoTestClock: a release build cannot move the gateway's
// clock; only -tags credgw_testclock (the end-to-end tests) adds the flag.
func TestReleaseHasNoTestClock(t *testing.T) {
	if f := newServeCmd().Flags().Lookup("test-clock-offset"); f != nil {
		t.Fatal("serve has --test-clock-offset in a release build")
	}
	if testClock(nil) != nil {
		t.Fatal("a release build has a test clock")
	}
}
