module github.com/regionguard/regionguard/clients/go

// go 1.25.0, not newer: the previous Go release builds this module too. franz-go v1.21.7 is the
// newest release that asks for no more than 1.25 (v1.22 asks for 1.26).
go 1.25.0

require (
	github.com/google/uuid v1.6.0
	github.com/twmb/franz-go v1.21.7
)

require (
	github.com/klauspost/compress v1.19.2 // indirect
	github.com/pierrec/lz4/v4 v4.1.26 // indirect
	github.com/twmb/franz-go/pkg/kmsg v1.13.1 // indirect
)
