// Package test holds credgw's end-to-end tests: they build the credgw binary
// and drive it as a user does, together with real outside programs (OpenSC's
// pkcs11-tool, OpenSSL). Nothing imports this package.
//
// The binary is built with -tags credgw_testclock, which adds one hidden
// flag to the release build: `serve --test-clock-offset D` runs the
// gateway's clock D ahead, so that activation expiry and the confirm window
// can be tested against the process (TestClockAgainstTheBinary).
package test
