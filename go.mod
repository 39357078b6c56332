module github.com/credgw/credgw

go 1.26.0

require (
	github.com/miekg/pkcs11 v1.1.2
	github.com/spf13/cobra v1.10.2
	golang.org/x/crypto v0.59.0
)

require (
	github.com/inconshreveable/mousetrap v1.1.0 // indirect
	github.com/spf13/pflag v1.0.9 // indirect
)
