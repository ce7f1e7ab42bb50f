module treasure

go 1.26.8
