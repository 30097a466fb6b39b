module xarch/launcher

go 1.21
