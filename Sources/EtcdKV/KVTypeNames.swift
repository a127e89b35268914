import KVStore

// Foundation also declares `SortOrder`, etcd's generated `RangeRequest` nests types of the same
// names, and the module `KVStore` shares its name with its main struct (so `KVStore.SortOrder`
// cannot name the type): these aliases, declared in a file that does not import Foundation,
// disambiguate.
typealias KVSortOrder = SortOrder
typealias KVSortTarget = SortTarget
