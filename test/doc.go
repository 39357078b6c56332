// Package test holds credgw's end-to-end tests: they build the credgw binary
// and drive it as a user does, together with real outside programs (OpenSC's
// pkcs11-tool, OpenSSL). Nothing imports this package.
package test
