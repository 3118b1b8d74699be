module github.com/kadence-io/kadence/tools/pause

go 1.25.0
